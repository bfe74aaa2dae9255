package supervisor

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/disk"
)

func TestDiskThresholdsFromConfig(t *testing.T) {
	if got := DiskThresholds(config.Default().Disk); got != disk.DefaultThresholds() {
		t.Fatalf("config defaults %+v differ from disk.DefaultThresholds %+v", got, disk.DefaultThresholds())
	}
}

// TestDiskStatusAndMetrics: status and /metrics show the monitor's last
// sample; before the first and after a failed probe the metrics are absent.
func TestDiskStatusAndMetrics(t *testing.T) {
	h := newHostStatus("n1", "test", "m3sup", nil, zap.NewNop())
	var probeErr error
	m := &disk.Monitor{Path: "/data", Thresholds: disk.DefaultThresholds(), Probe: func(string) (disk.Usage, error) {
		return disk.Usage{SizeBytes: 10 << 30, UsedBytes: 9 << 30, FreeBytes: 1 << 30, Inodes: 100, UsedInodes: 10, FreeInodes: 90}, probeErr
	}}
	h.connectDisk(m)
	if st := diskStatus(m); st != nil {
		t.Fatalf("status before the first sample: %+v", st)
	}
	if n := testutil.CollectAndCount(newDiskCollector(h)); n != 0 {
		t.Fatalf("%d disk metrics before the first sample", n)
	}
	m.Observe()
	st := diskStatus(m)
	if st == nil || st.Level != "low" || st.FreeBytes != 1<<30 || st.Path != "/data" || !strings.HasPrefix(st.Message, "low: ") {
		t.Fatalf("status: %+v", st)
	}
	want := `
# HELP m3sup_data_dir_free_bytes Bytes an unprivileged writer may still use on the filesystem holding the data dir.
# TYPE m3sup_data_dir_free_bytes gauge
m3sup_data_dir_free_bytes 1.073741824e+09
# HELP m3sup_data_dir_free_inodes Free inodes on the filesystem holding the data dir.
# TYPE m3sup_data_dir_free_inodes gauge
m3sup_data_dir_free_inodes 90
# HELP m3sup_data_dir_space_level 1 for the data dir filesystem's current level (ok, low, full), 0 for the others.
# TYPE m3sup_data_dir_space_level gauge
m3sup_data_dir_space_level{level="full"} 0
m3sup_data_dir_space_level{level="low"} 1
m3sup_data_dir_space_level{level="ok"} 0
`
	if err := testutil.GatherAndCompare(h.metrics.registry, strings.NewReader(want),
		"m3sup_data_dir_free_bytes", "m3sup_data_dir_free_inodes", "m3sup_data_dir_space_level"); err != nil {
		t.Fatal(err)
	}
	probeErr = errors.New("statfs /data: EIO")
	m.Observe()
	if st := diskStatus(m); st == nil || st.Error != "statfs /data: EIO" {
		t.Fatalf("status after a failed probe: %+v", st)
	}
	if n := testutil.CollectAndCount(newDiskCollector(h)); n != 0 {
		t.Fatalf("%d disk metrics after a failed probe", n)
	}
}
