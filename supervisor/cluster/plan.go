package cluster

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/m3sup/m3sup/supervisor/m3"
)

// DefaultRemoveAfter is how long a placement instance's host must have
// been gone from the registry before the controller removes it. Removal
// streams data to the remaining nodes, so a reboot or an m3sup upgrade must
// never trigger it.
const DefaultRemoveAfter = time.Hour

// Topology is what the placement should hold: the db hosts registered now,
// with the cluster's replication factor and shard count (used at init).
type Topology struct {
	RF     int
	Shards int
	Hosts  []Host // registered hosts; only those with RoleDBNode count
	// RemoveAfter: an instance whose host has been unregistered for at
	// least this long is removed. Zero removes on the first sighting of
	// its absence.
	RemoveAfter time.Duration
	// Leaving are hosts being decommissioned (`m3sup leave`): their
	// instances are removed at once (no RemoveAfter), one at a time, and
	// never added again.
	Leaving []string
}

// Observed is what the controller read: the placement, the clock, and when
// each placement instance's host was last seen registered as a db host.
// An instance missing from LastSeen has an unknown last sighting and is not
// removed; the caller records when it first noticed the absence
// (sightings.update does).
type Observed struct {
	PlacementExists bool
	Placement       m3.Placement
	LastSeen        map[string]time.Time
	Now             time.Time
}

// Kind names an Action.
type Kind string

// Kinds of action. Init, Add and Remove change the placement; Wait and None
// do not.
const (
	KindNone   Kind = "none"   // the placement matches the topology
	KindWait   Kind = "wait"   // something must change first; Reason says what
	KindInit   Kind = "init"   // create the placement with Instances
	KindAdd    Kind = "add"    // add Instances[0]
	KindRemove Kind = "remove" // remove instance ID
)

// Action is the one step Plan asks for.
type Action struct {
	Kind      Kind
	Instances []m3.Instance // KindInit: all of them; KindAdd: exactly one
	ID        string        // KindRemove
	Reason    string
}

// Mutates reports whether a changes the placement.
func (a Action) Mutates() bool {
	return a.Kind == KindInit || a.Kind == KindAdd || a.Kind == KindRemove
}

func (a Action) String() string {
	switch a.Kind {
	case KindInit:
		ids := make([]string, len(a.Instances))
		for i, in := range a.Instances {
			ids[i] = in.ID
		}
		return "init placement with " + strings.Join(ids, ", ")
	case KindAdd:
		return "add " + a.Instances[0].ID + ": " + a.Reason
	case KindRemove:
		return "remove " + a.ID + ": " + a.Reason
	case KindWait:
		return "wait: " + a.Reason
	}
	return "none"
}

func wait(format string, args ...any) Action {
	return Action{Kind: KindWait, Reason: fmt.Sprintf(format, args...)}
}

// Plan decides the one next placement change. It is pure: same input, same
// answer, no clock, no I/O.
//
//   - No placement: init with every registered db host once there are at
//     least RF of them in at least RF isolation groups; wait before.
//   - A placement whose shards are not all AVAILABLE: wait (a move is under
//     way, or nodes are still bootstrapping).
//   - Otherwise add the first registered db host missing from the
//     placement that is not leaving; else remove the first instance whose
//     host is leaving; else the first whose host has been gone for
//     RemoveAfter — either unless that would leave fewer than RF instances
//     or isolation groups; else wait for pending removals; else none.
//
// Changes go one at a time: after an add or remove the shards move, and the
// next Plan waits until they are AVAILABLE again.
func Plan(desired Topology, observed Observed) Action {
	if desired.RF < 1 || desired.Shards < 1 {
		return wait("replication factor %d and shard count %d must be positive", desired.RF, desired.Shards)
	}
	var db []Host
	for _, h := range desired.Hosts {
		if h.Has(RoleDBNode) {
			db = append(db, h)
		}
	}
	slices.SortFunc(db, func(a, b Host) int { return strings.Compare(a.Name, b.Name) })

	if !observed.PlacementExists {
		if len(db) < desired.RF {
			return wait("%d of %d db hosts registered; placement init needs replication factor %d", len(db), desired.RF, desired.RF)
		}
		groups := map[string]bool{}
		for _, h := range db {
			groups[h.IsolationGroup] = true
		}
		if len(groups) < desired.RF {
			return wait("%d db hosts registered in %d isolation groups; placement init needs replication factor %d groups (set cluster.isolationGroup per host)", len(db), len(groups), desired.RF)
		}
		instances := make([]m3.Instance, 0, len(db))
		for _, h := range db {
			in, err := instance(h)
			if err != nil {
				return wait("%v", err)
			}
			instances = append(instances, in)
		}
		return Action{Kind: KindInit, Instances: instances, Reason: fmt.Sprintf("%d db hosts registered", len(db))}
	}

	p := observed.Placement
	if !p.AllAvailable() {
		if len(p.ShardStates()) == 0 {
			return wait("placement has no shards")
		}
		return wait("shards moving: %s", p.StateSummary())
	}

	registered := make(map[string]bool, len(db))
	for _, h := range db {
		registered[h.Name] = true
		if _, ok := p.Instances[h.Name]; ok || slices.Contains(desired.Leaving, h.Name) {
			continue
		}
		in, err := instance(h)
		if err != nil {
			return wait("%v", err)
		}
		return Action{Kind: KindAdd, Instances: []m3.Instance{in}, Reason: "registered db host is not in the placement"}
	}

	for _, id := range p.InstanceIDs() {
		if !slices.Contains(desired.Leaving, id) {
			continue
		}
		if a, ok := removable(p, id, desired.RF); !ok {
			return a
		}
		return Action{Kind: KindRemove, ID: id, Reason: "host is leaving"}
	}

	var pending []string
	for _, id := range p.InstanceIDs() {
		if registered[id] {
			continue
		}
		seen, ok := observed.LastSeen[id]
		if !ok || observed.Now.Sub(seen) < desired.RemoveAfter {
			pending = append(pending, id)
			continue
		}
		if a, ok := removable(p, id, desired.RF); !ok {
			return a
		}
		return Action{Kind: KindRemove, ID: id, Reason: fmt.Sprintf("unregistered since %s", seen.UTC().Format(time.RFC3339))}
	}
	if len(pending) > 0 {
		return wait("unregistered %s: removal after %s", strings.Join(pending, ", "), desired.RemoveAfter)
	}
	return Action{Kind: KindNone}
}

// removable reports whether instance id may go without leaving fewer than
// rf instances or isolation groups; when not, the wait that says why.
func removable(p m3.Placement, id string, rf int) (Action, bool) {
	if left := len(p.Instances) - 1; left < rf {
		return wait("%s is gone or leaving, but removing it would leave %d instances for replication factor %d", id, left, rf), false
	}
	if groups := isolationGroupsWithout(p, id); groups < rf {
		return wait("%s is gone or leaving, but removing it would leave %d isolation groups for replication factor %d", id, groups, rf), false
	}
	return Action{}, true
}

// instance is the placement instance for db host h; its ID is the host name.
func instance(h Host) (m3.Instance, error) {
	host, port, err := splitEndpoint(h.Endpoint)
	if err != nil {
		return m3.Instance{}, fmt.Errorf("host %s: %w", h.Name, err)
	}
	if h.IsolationGroup == "" {
		return m3.Instance{}, fmt.Errorf("host %s: no isolation group", h.Name)
	}
	hostname := h.Hostname
	if hostname == "" {
		hostname = host
	}
	return m3.Instance{ID: h.Name, IsolationGroup: h.IsolationGroup, Endpoint: h.Endpoint, Hostname: hostname, Port: port, Weight: h.Weight}, nil
}

func isolationGroupsWithout(p m3.Placement, id string) int {
	groups := make(map[string]bool)
	for iid, in := range p.Instances {
		if iid != id {
			groups[in.IsolationGroup] = true
		}
	}
	return len(groups)
}

// sightings remembers when each placement instance's host was last seen
// registered as a db host. It lives in the leader's memory only: a new
// leader starts every absent host's grace again from its own first look,
// which errs towards keeping an instance longer, never shorter.
type sightings map[string]time.Time

// update records one observation at now: registered db hosts are seen now;
// a placement instance never seen before is first noticed now; entries for
// hosts that are neither registered nor placed are forgotten.
func (s sightings) update(now time.Time, hosts []Host, p m3.Placement) {
	keep := make(map[string]bool)
	for _, h := range hosts {
		if h.Has(RoleDBNode) {
			s[h.Name] = now
			keep[h.Name] = true
		}
	}
	for id := range p.Instances {
		if _, ok := s[id]; !ok {
			s[id] = now
		}
		keep[id] = true
	}
	for id := range s {
		if !keep[id] {
			delete(s, id)
		}
	}
}
