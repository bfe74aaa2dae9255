package supervisor

import (
	"testing"

	"github.com/m3sup/m3sup/supervisor/config"
)

// TestRegisteredHostHoldsCA: a host that holds the cluster CA registers as
// a CA holder, with a join URL on its advertise address once it serves
// joins (cluster.joinListen); a host without the CA does neither.
func TestRegisteredHostHoldsCA(t *testing.T) {
	cfg := config.Default()
	cfg.NodeName, cfg.Cluster.Advertise = "host2", "127.0.0.3"
	h, err := registeredHost(cfg, true)
	if err != nil || !h.HoldsCA || h.JoinURL != "" {
		t.Fatalf("registered without joinListen: %+v, %v", h, err)
	}
	cfg.Cluster.JoinListen = "127.0.0.1:0"
	if h, err = registeredHost(cfg, true); err != nil || !h.HoldsCA || h.JoinURL != "https://127.0.0.3:0" {
		t.Fatalf("registered with joinListen: %+v, %v", h, err)
	}
	cfg.NodeName, cfg.Cluster.Advertise, cfg.Cluster.JoinListen = "host3", "127.0.0.4", "127.0.0.1:0"
	if h, err := registeredHost(cfg, false); err != nil || h.HoldsCA || h.JoinURL != "" {
		t.Fatalf("host without the CA registered: %+v, %v", h, err)
	}
}
