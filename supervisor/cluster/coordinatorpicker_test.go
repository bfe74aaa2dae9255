package cluster

import "testing"

func TestChooseCoordinator(t *testing.T) {
	coord := func(name string) Host {
		return Host{Name: name, Roles: []Role{RoleCoordinator}, Coordinator: "http://" + name + ":7201"}
	}
	db := Host{Name: "a-db", Roles: []Role{RoleDBNode}, Endpoint: "a-db:9000", IsolationGroup: "a"}
	noURL := Host{Name: "a-nourl", Roles: []Role{RoleCoordinator}}
	for _, tc := range []struct {
		name    string
		hosts   []Host
		current string
		want    string
		ok      bool
	}{
		{"none registered", nil, "", "", false},
		{"only dbnode hosts and one without a URL", []Host{db, noURL}, "", "", false},
		{"first by name", []Host{coord("c3"), db, coord("c1"), coord("c2")}, "", "c1", true},
		{"keeps the current one while registered", []Host{coord("c1"), coord("c2")}, "c2", "c2", true},
		{"moves on when the current one is gone", []Host{coord("c1"), coord("c3")}, "c2", "c1", true},
	} {
		name, url, ok := chooseCoordinator(tc.hosts, tc.current)
		if ok != tc.ok || name != tc.want || (ok && url != "http://"+tc.want+":7201") {
			t.Errorf("%s: got %q %q %t, want %q %t", tc.name, name, url, ok, tc.want, tc.ok)
		}
	}
}
