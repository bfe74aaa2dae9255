package disk

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const gib = 1 << 30

func TestJudge(t *testing.T) {
	th := DefaultThresholds()
	for _, tc := range []struct {
		name string
		u    Usage
		want Level
		msg  string
	}{
		{"plenty", Usage{SizeBytes: 100 * gib, FreeBytes: 50 * gib, Inodes: 1000, FreeInodes: 900}, LevelOK, ""},
		{"below 10 percent", Usage{SizeBytes: 100 * gib, FreeBytes: 9 * gib}, LevelLow, "9.0 GiB free of 100.0 GiB (9.0%), threshold 10% or 2.0 GiB"},
		{"below 2 GiB on a big disk", Usage{SizeBytes: 10 * gib, FreeBytes: 1.5 * gib}, LevelLow, "low: "},
		{"below 2 percent", Usage{SizeBytes: 1000 * gib, FreeBytes: 19 * gib}, LevelFull, "nearly full"},
		{"below 256 MiB", Usage{SizeBytes: 1 * gib, FreeBytes: 100 << 20}, LevelFull, "nearly full"},
		{"no space at all", Usage{SizeBytes: 1 * gib}, LevelFull, "0 B free"},
		{"inodes low", Usage{SizeBytes: 100 * gib, FreeBytes: 50 * gib, Inodes: 1000, FreeInodes: 50}, LevelLow, "50 of 1000 inodes free"},
		{"inodes nearly gone", Usage{SizeBytes: 100 * gib, FreeBytes: 50 * gib, Inodes: 1000, FreeInodes: 10}, LevelFull, "inodes"},
		{"no inode limit", Usage{SizeBytes: 100 * gib, FreeBytes: 50 * gib}, LevelOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, msg := Judge(tc.u, th)
			if got != tc.want || !strings.Contains(msg, tc.msg) {
				t.Fatalf("Judge = %s %q, want %s containing %q", got, msg, tc.want, tc.msg)
			}
		})
	}
}

func TestJudgeThresholdsOff(t *testing.T) {
	u := Usage{SizeBytes: 100 * gib, FreeBytes: 1}
	if l, _ := Judge(u, Thresholds{}); l != LevelOK {
		t.Fatalf("all thresholds off: %s", l)
	}
	if l, _ := Judge(u, Thresholds{WarnFreePercent: 10}); l != LevelLow {
		t.Fatalf("warn by percent only: %s", l)
	}
	if l, _ := Judge(Usage{SizeBytes: 100 * gib, FreeBytes: 50 * gib}, Thresholds{WarnFreeBytes: 60 * gib}); l != LevelLow {
		t.Fatalf("warn by bytes only: %s", l)
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536 << 20: "1.5 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestTransition(t *testing.T) {
	ok := Sample{Level: LevelOK}
	low := Sample{Level: LevelLow}
	full := Sample{Level: LevelFull}
	bad := Sample{Err: errors.New("statfs: EIO")}
	steps := []struct {
		cur  Sample
		want Change
	}{
		{ok, NoChange}, // healthy first sample: quiet
		{ok, NoChange},
		{low, ChangeWarn},
		{low, NoChange}, // once per transition, not every poll
		{full, ChangeError},
		{full, NoChange},
		{low, ChangeWarn},
		{ok, ChangeClear},
		{bad, ChangeWarn},
		{bad, NoChange},
		{ok, ChangeClear},
	}
	var prev Sample
	had := false
	for i, s := range steps {
		if got := Transition(prev, had, s.cur); got != s.want {
			t.Fatalf("step %d (%v → %v): %v, want %v", i, key(prev), key(s.cur), got, s.want)
		}
		prev, had = s.cur, true
	}
	if got := Transition(Sample{}, false, low); got != ChangeWarn {
		t.Fatalf("low first sample: %v, want a warning", got)
	}
}

func TestMonitorLogsOncePerTransition(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	free := uint64(50 * gib)
	var probeErr error
	m := &Monitor{Path: "/data", Thresholds: DefaultThresholds(), Log: zap.New(core),
		Now: func() time.Time { return time.Unix(100, 0) },
		Probe: func(p string) (Usage, error) {
			if p != "/data" {
				t.Fatalf("probe %q", p)
			}
			return Usage{SizeBytes: 100 * gib, FreeBytes: free}, probeErr
		}}
	if _, ok := m.Last(); ok {
		t.Fatal("a sample before the first probe")
	}
	m.Observe()
	free = 5 * gib
	m.Observe()
	m.Observe()
	free = 1 * gib
	m.Observe()
	free = 50 * gib
	m.Observe()
	probeErr = errors.New("EIO")
	m.Observe()
	m.Observe()
	var got []string
	for _, e := range logs.All() {
		got = append(got, e.Level.String()+" "+e.Message)
	}
	want := []string{
		"warn data dir filesystem is low: 5.0 GiB free of 100.0 GiB (5.0%), threshold 10% or 2.0 GiB",
		"error data dir filesystem is nearly full: 1.0 GiB free of 100.0 GiB (1.0%), threshold 2% or 256.0 MiB; M3's commit log and m3sup's state writes will fail when it is full",
		"info data dir filesystem has enough free space again",
		"warn cannot measure the data dir's filesystem",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("logged:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	s, ok := m.Last()
	if !ok || s.Err == nil || s.Path != "/data" || !s.At.Equal(time.Unix(100, 0)) {
		t.Fatalf("last sample %+v", s)
	}
}
