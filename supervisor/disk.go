package supervisor

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/disk"
)

// DiskThresholds turns config's disk section into the thresholds package
// disk judges by (the daemon, preflight).
func DiskThresholds(d config.Disk) disk.Thresholds {
	return disk.Thresholds{WarnFreePercent: float64(d.WarnFreePercent), WarnFreeBytes: d.WarnFreeBytes,
		FailFreePercent: float64(d.FailFreePercent), FailFreeBytes: d.FailFreeBytes}
}

// diskStatus is the monitor's last sample as status shows it; nil before
// the first.
func diskStatus(m *disk.Monitor) *api.DiskStatus {
	if m == nil {
		return nil
	}
	s, ok := m.Last()
	if !ok {
		return nil
	}
	out := &api.DiskStatus{Path: s.Path, SizeBytes: s.SizeBytes, UsedBytes: s.UsedBytes, FreeBytes: s.FreeBytes,
		Inodes: s.Inodes, UsedInodes: s.UsedInodes, FreeInodes: s.FreeInodes,
		Level: string(s.Level), Message: s.Message, SampledAt: s.At}
	if s.Err != nil {
		out.Error = s.Err.Error()
	}
	return out
}

// diskCollector exports the monitor's last sample: the data dir's
// filesystem size, free space and inodes, and whether it is low or full.
type diskCollector struct {
	h                                           *hostStatus
	size, free, used, inodes, freeInodes, level *prometheus.Desc
}

func newDiskCollector(h *hostStatus) diskCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return diskCollector{h: h,
		size:       d("m3sup_data_dir_size_bytes", "Size of the filesystem holding the data dir."),
		free:       d("m3sup_data_dir_free_bytes", "Bytes an unprivileged writer may still use on the filesystem holding the data dir."),
		used:       d("m3sup_data_dir_used_bytes", "Bytes used on the filesystem holding the data dir."),
		inodes:     d("m3sup_data_dir_inodes", "Inodes of the filesystem holding the data dir (0: no inode limit)."),
		freeInodes: d("m3sup_data_dir_free_inodes", "Free inodes on the filesystem holding the data dir."),
		level:      d("m3sup_data_dir_space_level", "1 for the data dir filesystem's current level (ok, low, full), 0 for the others.", "level"),
	}
}

func (c diskCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.size, c.free, c.used, c.inodes, c.freeInodes, c.level} {
		ch <- d
	}
}

// Collect reports nothing before the first sample or after a failed one:
// an absent series, not a false zero.
func (c diskCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.h.sources().disk
	if m == nil {
		return
	}
	s, ok := m.Last()
	if !ok || s.Err != nil {
		return
	}
	g := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	g(c.size, s.SizeBytes)
	g(c.free, s.FreeBytes)
	g(c.used, s.UsedBytes)
	g(c.inodes, s.Inodes)
	g(c.freeInodes, s.FreeInodes)
	for _, l := range []disk.Level{disk.LevelOK, disk.LevelLow, disk.LevelFull} {
		ch <- prometheus.MustNewConstMetric(c.level, prometheus.GaugeValue, boolGauge(s.Level == l), string(l))
	}
}
