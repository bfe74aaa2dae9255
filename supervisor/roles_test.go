package supervisor

import (
	"errors"
	"reflect"
	"testing"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/config"
)

func TestRegisteredHostRoles(t *testing.T) {
	cfg := config.Default()
	cfg.NodeName = "edge7"
	cfg.Cluster.Advertise = "10.0.0.7"
	cfg.Cluster.IsolationGroup = "rack-b"
	cfg.Cluster.Weight = 50
	for _, tc := range []struct {
		roles     []string
		want      []cluster.Role
		endpoint  string
		coordURL  string
		component string // one this host refuses to control
	}{
		{[]string{"dbnode", "coordinator"}, []cluster.Role{cluster.RoleDBNode, cluster.RoleCoordinator}, "10.0.0.7:9000", "http://10.0.0.7:7201", ""},
		{[]string{"coordinator"}, []cluster.Role{cluster.RoleCoordinator}, "", "http://10.0.0.7:7201", DBNode},
		{[]string{"dbnode"}, []cluster.Role{cluster.RoleDBNode}, "10.0.0.7:9000", "", Coordinator},
	} {
		cfg.Cluster.Roles = tc.roles
		h, err := registeredHost(cfg, false)
		if err != nil {
			t.Fatalf("%v: %v", tc.roles, err)
		}
		if !reflect.DeepEqual(h.Roles, tc.want) || h.Endpoint != tc.endpoint || h.Coordinator != tc.coordURL ||
			h.IsolationGroup != "rack-b" || h.Weight != 50 || h.Name != "edge7" {
			t.Errorf("%v: registered %+v", tc.roles, h)
		}
		if err := h.Validate(); err != nil {
			t.Errorf("%v: registered host does not validate: %v", tc.roles, err)
		}
		for _, c := range []string{DBNode, Coordinator} {
			err := (&controlAPI{Roles: cfg.Cluster.Roles}).hasComponent(c)
			if c == tc.component {
				if !errors.Is(err, api.ErrNotFound) {
					t.Errorf("%v: control of %s: %v, want not found", tc.roles, c, err)
				}
			} else if err != nil {
				t.Errorf("%v: control of %s: %v", tc.roles, c, err)
			}
		}
	}
}

// TestComponentNames: the rollout (package cluster) finds the components by
// the names the daemon gives them.
func TestComponentNames(t *testing.T) {
	if DBNode != cluster.DBNodeComponent || Coordinator != cluster.CoordinatorComponent {
		t.Fatalf("component names: daemon %q %q, cluster %q %q", DBNode, Coordinator, cluster.DBNodeComponent, cluster.CoordinatorComponent)
	}
}
