package supervisor

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/pki"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestCertsStatus: the earliest expiry is reported; a warning appears
// from WarnAt (30 days, or a tenth of a short lifetime, before expiry) and
// says expired after; a read error is shown beside what could be read.
func TestCertsStatus(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	year := pki.CertFileInfo{Path: "/pki/etcd-peer.crt", CommonName: "peer", Serial: "1", Issued: t0, NotAfter: t0.Add(365 * 24 * time.Hour)}
	short := pki.CertFileInfo{Path: "/pki/m3/etcd-client.crt", CommonName: "m3", Serial: "2", Issued: t0, NotAfter: t0.Add(400 * 24 * time.Hour)}
	certs := []pki.CertFileInfo{short, year}
	if st, _ := certsStatus(nil, nil, t0); st != nil {
		t.Errorf("no certificates: %+v, want nil", st)
	}
	for _, tc := range []struct {
		name string
		now  time.Time
		warn string // substring; "" for none
	}{
		{"fresh", t0, ""},
		{"renewal due, no warning yet", t0.Add(300 * 24 * time.Hour), ""},
		{"30 days ahead", t0.Add(335 * 24 * time.Hour), "/pki/etcd-peer.crt (peer) expires at 2027-01-01T00:00:00Z, in 720h0m0s"},
		{"expired", t0.Add(366 * 24 * time.Hour), "/pki/etcd-peer.crt (peer) expired at 2027-01-01T00:00:00Z"},
	} {
		st, _ := certsStatus(certs, nil, tc.now)
		if st == nil || !st.EarliestExpiry.Equal(year.NotAfter) || st.Path != year.Path || st.Count != 2 || st.Serial != "1" {
			t.Fatalf("%s: %+v, want the peer certificate's expiry", tc.name, st)
		}
		if (tc.warn == "") != (st.Warning == "") || !strings.Contains(st.Warning, tc.warn) {
			t.Errorf("%s: warning %q, want %q", tc.name, st.Warning, tc.warn)
		}
	}
	// A ten-minute certificate warns a minute ahead.
	tenMin := pki.CertFileInfo{Path: "p", Issued: t0, NotAfter: t0.Add(10 * time.Minute)}
	if st, _ := certsStatus([]pki.CertFileInfo{tenMin}, nil, t0.Add(8*time.Minute)); st.Warning != "" {
		t.Errorf("10m certificate at 8m: warning %q", st.Warning)
	}
	if st, _ := certsStatus([]pki.CertFileInfo{tenMin}, nil, t0.Add(9*time.Minute)); st.Warning == "" {
		t.Error("10m certificate at 9m: no warning")
	}
	st, _ := certsStatus([]pki.CertFileInfo{year}, errors.New("read certificate: bad"), t0)
	if st.Error == "" || st.Count != 1 || st.Path != year.Path {
		t.Errorf("with an error: %+v", st)
	}
}

// TestCheckCertsLogsOnce: a certificate warning is logged once, however
// often it is checked (its text changes with the time left); again once it
// has expired; again after a renewal.
func TestCheckCertsLogsOnce(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	h := newHostStatus("n1", "test", "ns", nil, zap.New(core))
	now := time.Now()
	warned := pki.CertFileInfo{Path: "/pki/etcd-peer.crt", Serial: "1", Issued: now.Add(-9 * time.Minute), NotAfter: now.Add(time.Minute)}
	certs := []pki.CertFileInfo{warned}
	h.connectCerts(func() ([]pki.CertFileInfo, error) { return certs, nil })
	for range 3 {
		h.checkCerts()
		time.Sleep(10 * time.Millisecond)
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d warnings logged, want 1: %v", n, logs.All())
	}
	certs[0].NotAfter = now.Add(-time.Second)
	h.checkCerts()
	h.checkCerts()
	if n := logs.Len(); n != 2 || !strings.Contains(logs.All()[1].Message, "expired") {
		t.Fatalf("after expiry: %d warnings logged, want 2, the last saying expired: %v", n, logs.All())
	}
	h.certsRenewed()
	h.checkCerts()
	if n := logs.Len(); n != 3 {
		t.Fatalf("after a renewal: %d warnings logged, want 3", n)
	}
	if v := h.earliestCertExpiry(); v != float64(certs[0].NotAfter.UnixNano())/1e9 {
		t.Errorf("metric %v, want %v", v, certs[0].NotAfter.Unix())
	}
}
