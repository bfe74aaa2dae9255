package member

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/pki"
)

// TestNextRenewal: the earliest certificate's renewal point, with the
// injected draw.
func TestNextRenewal(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	certs := []pki.CertFileInfo{
		{Issued: t0, NotAfter: t0.Add(120 * time.Minute)},
		{Issued: t0, NotAfter: t0.Add(60 * time.Minute)},
	}
	if _, ok := NextRenewal(nil, 0); ok {
		t.Error("no certificates: a renewal")
	}
	for _, tc := range []struct {
		r    float64
		want time.Duration
	}{{0, 40 * time.Minute}, {1, 45 * time.Minute}} {
		if at, ok := NextRenewal(certs, tc.r); !ok || !at.Equal(t0.Add(tc.want)) {
			t.Errorf("r=%v: %v, want %v after issue", tc.r, at.Sub(t0), tc.want)
		}
	}
}

// TestRenewCerts: a single node started with a short certificate lifetime
// renews its member, client and M3 certificates in place (new serials on
// disk, all four certificates), and etcd keeps serving after the first
// certificates expire.
func TestRenewCerts(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for certificates to be renewed and expire")
	}
	dataDir := t.TempDir()
	o := localOptions(t, dataDir)
	o.CertTTL = 6 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	before, err := m.Certs()
	if err != nil || len(before) != 3 {
		t.Fatalf("Certs: %v, %+v; want 3 files", err, before)
	}
	renewed := make(chan struct{}, 10)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.RenewCerts(rctx, func() float64 { return 0 }, func() { renewed <- struct{}{} }) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("RenewCerts: %v", err)
		}
	}()
	select {
	case <-renewed:
	case <-ctx.Done():
		t.Fatal("no renewal")
	}
	after, err := m.Certs()
	if err != nil {
		t.Fatal(err)
	}
	for i := range before {
		if after[i].Path != before[i].Path || after[i].Serial == before[i].Serial {
			t.Errorf("%s: serial %s, was %s: not renewed", before[i].Path, after[i].Serial, before[i].Serial)
		}
		if at := before[i].RenewAt(0); time.Now().Before(at) {
			t.Errorf("%s renewed before its renewal point %v", before[i].Path, at)
		}
	}
	if got := m.M3CertSerial(); got != after[2].Serial || after[2].Path != filepath.Join(o.Paths.M3PKI, pki.ClientCertFile) {
		t.Errorf("M3CertSerial %s, want %s", got, after[2].Serial)
	}
	time.Sleep(time.Until(before[0].NotAfter) + time.Second)
	if _, err := m.Etcd().Client().Put(ctx, "/m3sup/v1/after-expiry", "1"); err != nil {
		t.Errorf("etcd after the first certificates expired: %v", err)
	}
}
