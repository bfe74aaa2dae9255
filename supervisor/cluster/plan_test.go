package cluster

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/m3"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func dbHost(name, group string) Host {
	return Host{Name: name, Roles: []Role{RoleDBNode, RoleCoordinator}, IsolationGroup: group, Endpoint: name + ".lan:9000"}
}

func coordHost(name string) Host {
	return Host{Name: name, Roles: []Role{RoleCoordinator}}
}

// placed builds a placement: each "id/group" instance holds shards 0..n-1
// in the given state.
func placed(state string, n int, insts ...string) m3.Placement {
	p := m3.Placement{Instances: map[string]m3.PlacementInstance{}, NumShards: n, ReplicaFactor: 3}
	for _, s := range insts {
		id, group, _ := strings.Cut(s, "/")
		pi := m3.PlacementInstance{ID: id, IsolationGroup: group}
		for i := range n {
			pi.Shards = append(pi.Shards, m3.Shard{ID: uint32(i), State: state})
		}
		p.Instances[id] = pi
	}
	return p
}

func withShard(p m3.Placement, id string, state string) m3.Placement {
	pi := p.Instances[id]
	pi.Shards = append(append([]m3.Shard(nil), pi.Shards...), m3.Shard{ID: 99, State: state})
	p.Instances[id] = pi
	return p
}

func TestPlan(t *testing.T) {
	h1, h2, h3, h4 := dbHost("h1", "a"), dbHost("h2", "b"), dbHost("h3", "c"), dbHost("h4", "a")
	three := placed(m3.ShardAvailable, 4, "h1/a", "h2/b", "h3/c")
	four := placed(m3.ShardAvailable, 4, "h1/a", "h2/b", "h3/c", "h4/a")
	grace := 10 * time.Minute
	seenAt := func(d time.Duration, ids ...string) map[string]time.Time {
		m := map[string]time.Time{}
		for _, id := range ids {
			m[id] = t0.Add(-d)
		}
		return m
	}
	tests := []struct {
		name     string
		topo     Topology
		obs      Observed
		want     Kind
		id       string   // KindRemove
		ids      []string // KindInit, KindAdd: instance IDs in order
		inReason string
	}{
		{name: "bad rf", topo: Topology{RF: 0, Shards: 4}, want: KindWait, inReason: "must be positive"},
		{name: "bad shards", topo: Topology{RF: 3, Shards: 0}, want: KindWait, inReason: "must be positive"},
		{name: "init waits for rf hosts", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2}},
			want: KindWait, inReason: "2 of 3 db hosts"},
		{name: "coordinator-only hosts do not count", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, coordHost("c1")}},
			want: KindWait, inReason: "2 of 3 db hosts"},
		{name: "init with every db host, sorted", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h4, h2, coordHost("c1"), h1, h3}},
			want: KindInit, ids: []string{"h1", "h2", "h3", "h4"}},
		{name: "init waits for rf isolation groups", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h4}},
			want: KindWait, inReason: "3 db hosts registered in 2 isolation groups"},
		{name: "init refuses a host without endpoint", topo: Topology{RF: 1, Shards: 4, Hosts: []Host{{Name: "x", Roles: []Role{RoleDBNode}, IsolationGroup: "a"}}},
			want: KindWait, inReason: "endpoint"},
		{name: "init refuses a host without isolation group", topo: Topology{RF: 1, Shards: 4, Hosts: []Host{{Name: "x", Roles: []Role{RoleDBNode}, Endpoint: "x:9000"}}},
			want: KindWait, inReason: "isolation group"},
		{name: "placement without shards waits", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3}},
			obs: Observed{PlacementExists: true, Placement: placed(m3.ShardAvailable, 0, "h1/a")}, want: KindWait, inReason: "no shards"},
		{name: "add waits while shards initialize", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3, h4}},
			obs:  Observed{PlacementExists: true, Placement: withShard(placed(m3.ShardAvailable, 4, "h1/a", "h2/b", "h3/c"), "h2", m3.ShardInitializing)},
			want: KindWait, inReason: "shards moving: 12 AVAILABLE, 1 INITIALIZING"},
		{name: "remove waits while shards leave", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3}, RemoveAfter: grace},
			obs:  Observed{PlacementExists: true, Placement: withShard(placed(m3.ShardAvailable, 4, "h1/a", "h2/b", "h3/c", "h4/a"), "h4", m3.ShardLeaving), LastSeen: seenAt(time.Hour, "h4"), Now: t0},
			want: KindWait, inReason: "LEAVING"},
		{name: "add a new host", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3, h4}},
			obs: Observed{PlacementExists: true, Placement: three}, want: KindAdd, ids: []string{"h4"}},
		{name: "add one at a time", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3, dbHost("h6", "c"), dbHost("h5", "b")}},
			obs: Observed{PlacementExists: true, Placement: three}, want: KindAdd, ids: []string{"h5"}},
		{name: "add before remove", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h4, dbHost("h5", "c")}},
			obs:  Observed{PlacementExists: true, Placement: four, LastSeen: seenAt(time.Hour, "h3"), Now: t0},
			want: KindAdd, ids: []string{"h5"}},
		{name: "gone host within grace waits", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3}, RemoveAfter: grace},
			obs:  Observed{PlacementExists: true, Placement: four, LastSeen: seenAt(grace-time.Second, "h4"), Now: t0},
			want: KindWait, inReason: "unregistered h4: removal after 10m0s"},
		{name: "gone host with unknown sighting waits", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3}, RemoveAfter: grace},
			obs:  Observed{PlacementExists: true, Placement: four, Now: t0},
			want: KindWait, inReason: "unregistered h4"},
		{name: "gone host past grace is removed", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3}, RemoveAfter: grace},
			obs:  Observed{PlacementExists: true, Placement: four, LastSeen: seenAt(grace, "h4"), Now: t0},
			want: KindRemove, id: "h4"},
		{name: "host that dropped the dbnode role is removed", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3, coordHost("h4")}, RemoveAfter: grace},
			obs:  Observed{PlacementExists: true, Placement: four, LastSeen: seenAt(grace, "h4"), Now: t0},
			want: KindRemove, id: "h4"},
		{name: "remove one at a time", topo: Topology{RF: 2, Shards: 4, Hosts: []Host{h1, h2}, RemoveAfter: grace},
			obs:  Observed{PlacementExists: true, Placement: four, LastSeen: seenAt(grace, "h3", "h4"), Now: t0},
			want: KindRemove, id: "h3"},
		{name: "never below rf", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2}, RemoveAfter: grace},
			obs:  Observed{PlacementExists: true, Placement: three, LastSeen: seenAt(time.Hour, "h3"), Now: t0},
			want: KindWait, inReason: "leave 2 instances for replication factor 3"},
		{name: "never below rf isolation groups", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h4}, RemoveAfter: grace},
			obs:  Observed{PlacementExists: true, Placement: four, LastSeen: seenAt(time.Hour, "h3"), Now: t0},
			want: KindWait, inReason: "leave 2 isolation groups"},
		// Leaving hosts (`m3sup leave`): removed at once, never added.
		{name: "leaving registered host is removed at once", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3, h4}, RemoveAfter: grace, Leaving: []string{"h4"}},
			obs:  Observed{PlacementExists: true, Placement: four, LastSeen: seenAt(0, "h1", "h2", "h3", "h4"), Now: t0},
			want: KindRemove, id: "h4", inReason: "leaving"},
		{name: "leaving host is removed before the grace of a gone one", topo: Topology{RF: 2, Shards: 4, Hosts: []Host{h1, h2, h4}, RemoveAfter: grace, Leaving: []string{"h4"}},
			obs:  Observed{PlacementExists: true, Placement: four, LastSeen: seenAt(time.Minute, "h3"), Now: t0},
			want: KindRemove, id: "h4"},
		{name: "leaving waits while shards move", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3, h4}, Leaving: []string{"h4"}},
			obs:  Observed{PlacementExists: true, Placement: withShard(placed(m3.ShardAvailable, 4, "h1/a", "h2/b", "h3/c", "h4/a"), "h1", m3.ShardInitializing), Now: t0},
			want: KindWait, inReason: "INITIALIZING"},
		{name: "leaving host is not added", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3, h4}, Leaving: []string{"h4"}},
			obs: Observed{PlacementExists: true, Placement: three, Now: t0}, want: KindNone},
		{name: "leaving never below rf instances", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3}, Leaving: []string{"h3"}},
			obs:  Observed{PlacementExists: true, Placement: three, Now: t0},
			want: KindWait, inReason: "h3 is gone or leaving, but removing it would leave 2 instances for replication factor 3"},
		{name: "leaving never below rf isolation groups", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3, h4}, Leaving: []string{"h3"}},
			obs:  Observed{PlacementExists: true, Placement: four, Now: t0},
			want: KindWait, inReason: "leave 2 isolation groups"},
		{name: "leaving hosts go one at a time", topo: Topology{RF: 2, Shards: 4, Hosts: []Host{h1, h2, h3, h4}, Leaving: []string{"h4", "h3"}},
			obs:  Observed{PlacementExists: true, Placement: four, Now: t0},
			want: KindRemove, id: "h3"},
		{name: "add before a leaving removal", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3, dbHost("h5", "d")}, Leaving: []string{"h3"}},
			obs:  Observed{PlacementExists: true, Placement: three, Now: t0},
			want: KindAdd, ids: []string{"h5"}},
		// Hosts removed with `m3sup remove-host`: leaving and unregistered.
		{name: "leaving unregistered host is removed at once, no grace", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3}, RemoveAfter: grace, Leaving: []string{"h4"}},
			obs:  Observed{PlacementExists: true, Placement: four, LastSeen: seenAt(time.Second, "h4"), Now: t0},
			want: KindRemove, id: "h4", inReason: "leaving"},
		{name: "leaving unregistered host with unknown sighting is removed", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3}, RemoveAfter: grace, Leaving: []string{"h4"}},
			obs:  Observed{PlacementExists: true, Placement: four, Now: t0},
			want: KindRemove, id: "h4"},
		{name: "leaving unregistered host waits while shards move", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3}, Leaving: []string{"h4"}},
			obs:  Observed{PlacementExists: true, Placement: withShard(placed(m3.ShardAvailable, 4, "h1/a", "h2/b", "h3/c", "h4/a"), "h2", m3.ShardInitializing), Now: t0},
			want: KindWait, inReason: "INITIALIZING"},
		{name: "leaving unregistered host never below rf", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2}, Leaving: []string{"h3"}},
			obs:  Observed{PlacementExists: true, Placement: three, Now: t0},
			want: KindWait, inReason: "leave 2 instances for replication factor 3"},
		{name: "leaving host not in the placement: none", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3}, Leaving: []string{"h9"}},
			obs: Observed{PlacementExists: true, Placement: three, Now: t0}, want: KindNone},
		{name: "converged", topo: Topology{RF: 3, Shards: 4, Hosts: []Host{h1, h2, h3, coordHost("c1")}},
			obs: Observed{PlacementExists: true, Placement: three}, want: KindNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := Plan(tt.topo, tt.obs)
			if a.Kind != tt.want {
				t.Fatalf("Plan = %v, want kind %s", a, tt.want)
			}
			if !strings.Contains(a.Reason, tt.inReason) {
				t.Errorf("reason %q does not contain %q", a.Reason, tt.inReason)
			}
			if a.ID != tt.id {
				t.Errorf("ID %q, want %q", a.ID, tt.id)
			}
			var ids []string
			for _, in := range a.Instances {
				ids = append(ids, in.ID)
			}
			if !reflect.DeepEqual(ids, tt.ids) {
				t.Errorf("instances %v, want %v", ids, tt.ids)
			}
			if a.Mutates() != (tt.want == KindInit || tt.want == KindAdd || tt.want == KindRemove) {
				t.Errorf("Mutates() = %v for %s", a.Mutates(), a.Kind)
			}
			_ = a.String()
		})
	}
}

func TestForgettable(t *testing.T) {
	removed := func(names ...string) map[string]Leaving {
		m := map[string]Leaving{}
		for _, n := range names {
			m[n] = Leaving{Name: n, Since: t0, RemovedBy: "h1"}
		}
		return m
	}
	three := placed(m3.ShardAvailable, 4, "h1/a", "h2/b", "h3/c")
	four := placed(m3.ShardAvailable, 4, "h1/a", "h2/b", "h3/c", "h4/a")
	reg := []Host{dbHost("h1", "a"), dbHost("h2", "b"), dbHost("h3", "c")}
	tests := []struct {
		name    string
		leaving map[string]Leaving
		hosts   []Host
		p       m3.Placement
		exists  bool
		want    []string
	}{
		{"removed, out of the placement, all AVAILABLE", removed("h4"), reg, three, true, []string{"h4"}},
		{"still in the placement", removed("h4"), reg, four, true, nil},
		{"shards still moving", removed("h4"), reg, withShard(placed(m3.ShardAvailable, 4, "h1/a", "h2/b", "h3/c"), "h2", m3.ShardInitializing), true, nil},
		{"a leave of its own (no RemovedBy) is the host's to finish", map[string]Leaving{"h4": {Name: "h4", Since: t0}}, reg, three, true, nil},
		{"registered again: it finishes its own leave", removed("h4"), append(reg, dbHost("h4", "a")), three, true, nil},
		{"no placement", removed("h4"), reg, m3.Placement{}, false, []string{"h4"}},
		{"sorted", removed("h5", "h4"), reg, three, true, []string{"h4", "h5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Forgettable(tt.leaving, tt.hosts, tt.p, tt.exists); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Forgettable = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckLeave(t *testing.T) {
	four := placed(m3.ShardAvailable, 4, "h1/a", "h2/b", "h3/c", "h4/d")
	tests := []struct {
		name    string
		p       m3.Placement
		rf      int
		id      string
		leaving []string
		wantErr string // empty: allowed
	}{
		{name: "four to three, rf 3", p: four, rf: 3, id: "h4"},
		{name: "not in the placement", p: four, rf: 3, id: "h9"},
		{name: "three to two, rf 3", p: placed(m3.ShardAvailable, 4, "h1/a", "h2/b", "h3/c"), rf: 3, id: "h3",
			wantErr: "removing h3 from the placement would leave 2 instance(s) for replication factor 3; add a host first"},
		{name: "another host leaving counts", p: four, rf: 3, id: "h3", leaving: []string{"h4"},
			wantErr: "(with 1 other host(s) leaving) would leave 2 instance(s)"},
		{name: "isolation groups", p: placed(m3.ShardAvailable, 4, "h1/a", "h2/b", "h3/c", "h4/a"), rf: 3, id: "h3",
			wantErr: "would leave 2 isolation group(s) for replication factor 3"},
		{name: "same group twice may go", p: placed(m3.ShardAvailable, 4, "h1/a", "h2/b", "h3/c", "h4/a"), rf: 3, id: "h4"},
		{name: "rf 1 single instance", p: placed(m3.ShardAvailable, 4, "h1/a"), rf: 1, id: "h1",
			wantErr: "would leave 0 instance(s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckLeave(tt.p, tt.rf, tt.id, tt.leaving)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckLeave refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrCannotLeave) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckLeave = %v, want ErrCannotLeave with %q", err, tt.wantErr)
			}
		})
	}
}

func TestPlanInstanceFields(t *testing.T) {
	h := Host{Name: "h1", Roles: []Role{RoleDBNode}, IsolationGroup: "rack1", Weight: 200, Endpoint: "10.0.0.1:9000"}
	a := Plan(Topology{RF: 1, Shards: 8, Hosts: []Host{h}}, Observed{})
	want := []m3.Instance{{ID: "h1", IsolationGroup: "rack1", Endpoint: "10.0.0.1:9000", Hostname: "10.0.0.1", Port: 9000, Weight: 200}}
	if a.Kind != KindInit || !reflect.DeepEqual(a.Instances, want) {
		t.Fatalf("Plan = %+v, want init %+v", a, want)
	}
	h.Hostname = "db1.example"
	if a := Plan(Topology{RF: 1, Shards: 8, Hosts: []Host{h}}, Observed{}); a.Instances[0].Hostname != "db1.example" {
		t.Fatalf("hostname %q, want the registered one", a.Instances[0].Hostname)
	}
}

func TestSightings(t *testing.T) {
	s := sightings{}
	p := placed(m3.ShardAvailable, 1, "h1/a", "h2/b")
	s.update(t0, []Host{dbHost("h1", "a"), coordHost("c1")}, p)
	if !reflect.DeepEqual(s, sightings{"h1": t0, "h2": t0}) {
		t.Fatalf("first look: %v (h2 is first noticed now, c1 is no db host)", s)
	}
	t1 := t0.Add(time.Minute)
	s.update(t1, []Host{dbHost("h1", "a"), dbHost("h3", "c")}, p)
	if !reflect.DeepEqual(s, sightings{"h1": t1, "h2": t0, "h3": t1}) {
		t.Fatalf("second look: %v (h2 must keep its first sighting)", s)
	}
	s.update(t1.Add(time.Minute), nil, placed(m3.ShardAvailable, 1, "h1/a"))
	if _, ok := s["h2"]; ok {
		t.Fatalf("h2 left the placement and the registry but is remembered: %v", s)
	}
}

func TestHostValidate(t *testing.T) {
	good := dbHost("h1", "a")
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := coordHost("c1").Validate(); err != nil {
		t.Fatalf("a coordinator host needs no endpoint: %v", err)
	}
	for name, h := range map[string]Host{
		"no name":     {Roles: []Role{RoleCoordinator}},
		"slash":       {Name: "a/b", Roles: []Role{RoleCoordinator}},
		"no roles":    {Name: "h"},
		"bad role":    {Name: "h", Roles: []Role{"query"}},
		"no group":    {Name: "h", Roles: []Role{RoleDBNode}, Endpoint: "h:9000"},
		"no endpoint": {Name: "h", Roles: []Role{RoleDBNode}, IsolationGroup: "a"},
		"bad port":    {Name: "h", Roles: []Role{RoleDBNode}, IsolationGroup: "a", Endpoint: "h:x"},
	} {
		if err := h.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, h)
		}
	}
}
