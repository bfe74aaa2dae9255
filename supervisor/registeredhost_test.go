package supervisor

import (
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/pki"
)

// TestRegisteredHostHoldsCA: a host that holds the cluster CA registers as
// a CA holder, with a join URL on its advertise address once it serves
// joins (cluster.joinListen); a host without the CA does neither.
func TestRegisteredHostHoldsCA(t *testing.T) {
	ca, err := pki.NewCA("m3sup-test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.NodeName, cfg.Cluster.Advertise = "host2", "127.0.0.3"
	s := New(Options{Config: cfg})
	s.ca = ca
	h, err := s.registeredHost()
	if err != nil || !h.HoldsCA || h.JoinURL != "" {
		t.Fatalf("registered without joinListen: %+v, %v", h, err)
	}
	s.cfg.Cluster.JoinListen = "127.0.0.1:0"
	if h, err = s.registeredHost(); err != nil || !h.HoldsCA || h.JoinURL != "https://127.0.0.3:0" {
		t.Fatalf("registered with joinListen: %+v, %v", h, err)
	}
	cfg.NodeName, cfg.Cluster.Advertise, cfg.Cluster.JoinListen = "host3", "127.0.0.4", "127.0.0.1:0"
	c := New(Options{Config: cfg})
	if h, err := c.registeredHost(); err != nil || h.HoldsCA || h.JoinURL != "" {
		t.Fatalf("host without the CA registered: %+v, %v", h, err)
	}
}
