package pki_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/pki"
)

// TestRenewAt: the renewal point is 2/3 of the lifetime at r=0, 3/4 at
// r=1, linear between, clamped outside [0, 1]; a certificate with no
// lifetime is due at once.
func TestRenewAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(120 * time.Hour)
	for _, tc := range []struct {
		r    float64
		want time.Duration // after notBefore
	}{
		{0, 80 * time.Hour},
		{0.5, 85 * time.Hour},
		{1, 90 * time.Hour},
		{-3, 80 * time.Hour},
		{7, 90 * time.Hour},
	} {
		if got := pki.RenewAt(nb, na, tc.r); !got.Equal(nb.Add(tc.want)) {
			t.Errorf("RenewAt(r=%v) = %v after notBefore, want %v", tc.r, got.Sub(nb), tc.want)
		}
	}
	if got := pki.RenewAt(nb, nb, 0.5); !got.Equal(nb) {
		t.Errorf("RenewAt of an empty lifetime = %v, want notBefore", got)
	}
	if got := pki.RenewAt(na, nb, 0.5); !got.Equal(na) {
		t.Errorf("RenewAt of a negative lifetime = %v, want notBefore", got)
	}
}

// TestWarnAt: 30 days before expiry for a year's certificate, a tenth of
// the lifetime for a short one.
func TestWarnAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	year := nb.Add(365 * 24 * time.Hour)
	if got, want := pki.WarnAt(nb, year), year.Add(-30*24*time.Hour); !got.Equal(want) {
		t.Errorf("WarnAt(year) = %v, want %v", got, want)
	}
	ten := nb.Add(10 * time.Minute)
	if got, want := pki.WarnAt(nb, ten), ten.Add(-time.Minute); !got.Equal(want) {
		t.Errorf("WarnAt(10m) = %v, want %v", got, want)
	}
}

// TestIssueTTLAndReadCertFile: IssueHost and IssueM3 honour the TTL, and
// ReadCertFile reports what was written.
func TestIssueTTLAndReadCertFile(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, err := pki.NewCA("test CA", now)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.IssueHost(dir, "h1", []string{"h1"}, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := ca.IssueM3(filepath.Join(dir, "m3"), "h1", 20*time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, cn string
		ttl      time.Duration
	}{
		{filepath.Join(dir, pki.PeerCertFile), pki.EtcdPeerCN, 10 * time.Minute},
		{filepath.Join(dir, pki.ClientCertFile), pki.NodeCN("h1"), 10 * time.Minute},
		{filepath.Join(dir, "m3", pki.ClientCertFile), pki.M3CN("h1"), 20 * time.Minute},
	} {
		info, _, err := pki.ReadCertFile(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if info.CommonName != tc.cn || info.Serial == "" || info.Path != tc.path {
			t.Errorf("%s: %+v, want CN %s and a serial", tc.path, info, tc.cn)
		}
		if d := info.NotAfter.Sub(now); d < tc.ttl-time.Second || d > tc.ttl+time.Second {
			t.Errorf("%s: valid for %v from now, want %v", tc.path, d, tc.ttl)
		}
		if d := info.Issued.Sub(now); d < -time.Second || d > time.Second {
			t.Errorf("%s: issued %v from now, want now (NotBefore's skew taken off)", tc.path, d)
		}
		if d := info.RenewAt(0).Sub(now); d < tc.ttl*2/3-time.Second || d > tc.ttl*2/3+time.Second {
			t.Errorf("%s: RenewAt(0) %v from now, want 2/3 of %v", tc.path, d, tc.ttl)
		}
	}
	if _, _, err := pki.ReadCertFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("ReadCertFile of a missing file: no error")
	}
}

// TestM3Current: M3's certificate is kept across daemon restarts while it
// is current, and reissued for another node, CA or lifetime, or once its
// renewal window opens.
func TestM3Current(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, err := pki.NewCA("test CA", now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("other CA", now)
	if err != nil {
		t.Fatal(err)
	}
	if ca.M3Current(dir, "h1", time.Hour, now) {
		t.Error("an empty dir is current")
	}
	if err := ca.IssueM3(dir, "h1", time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ca   *pki.CA
		node string
		ttl  time.Duration
		at   time.Time
		want bool
	}{
		{"fresh", ca, "h1", time.Hour, now, true},
		{"before the window", ca, "h1", time.Hour, now.Add(39 * time.Minute), true},
		{"in the window", ca, "h1", time.Hour, now.Add(41 * time.Minute), false},
		{"other node", ca, "h2", time.Hour, now, false},
		{"other CA", other, "h1", time.Hour, now, false},
		{"other lifetime", ca, "h1", 2 * time.Hour, now, false},
	} {
		if got := tc.ca.M3Current(dir, tc.node, tc.ttl, tc.at); got != tc.want {
			t.Errorf("%s: M3Current = %t, want %t", tc.name, got, tc.want)
		}
	}
}
