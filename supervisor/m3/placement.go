package m3

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
)

// Shard states as M3 reports them.
const (
	ShardInitializing = "INITIALIZING"
	ShardAvailable    = "AVAILABLE"
	ShardLeaving      = "LEAVING"
)

// Instance is one dbnode as the placement knows it. Endpoint is the node
// tchannel address (host:9000). Empty Zone takes the client's zone; zero
// Weight is 100.
type Instance struct {
	ID             string
	IsolationGroup string
	Zone           string
	Endpoint       string
	Hostname       string
	Port           uint32
	Weight         uint32
}

// Shard is one shard held by an instance.
type Shard struct {
	ID    uint32 `json:"id"`
	State string `json:"state"` // ShardInitializing, ShardAvailable, ShardLeaving
}

// PlacementInstance is an instance in a placement with its shards.
type PlacementInstance struct {
	ID             string  `json:"id"`
	IsolationGroup string  `json:"isolationGroup"`
	Zone           string  `json:"zone"`
	Weight         uint32  `json:"weight"`
	Endpoint       string  `json:"endpoint"`
	Hostname       string  `json:"hostname"`
	Port           uint32  `json:"port"`
	ShardSetID     uint32  `json:"shardSetId"`
	Shards         []Shard `json:"shards"`
}

// Placement is the m3db service placement (the subset m3sup reads).
type Placement struct {
	Instances     map[string]PlacementInstance `json:"instances"`
	NumShards     int                          `json:"numShards"`
	ReplicaFactor int                          `json:"replicaFactor"`
	IsSharded     bool                         `json:"isSharded"`
	IsMirrored    bool                         `json:"isMirrored"`
	Version       int                          `json:"-"` // etcd version of the placement
}

// ShardStates counts shard replicas by state over all instances.
func (p Placement) ShardStates() map[string]int {
	out := make(map[string]int)
	for _, inst := range p.Instances {
		for _, s := range inst.Shards {
			out[s.State]++
		}
	}
	return out
}

// AllAvailable reports whether the placement has shards and every shard of
// every instance is AVAILABLE.
func (p Placement) AllAvailable() bool {
	n := 0
	for _, inst := range p.Instances {
		for _, s := range inst.Shards {
			if s.State != ShardAvailable {
				return false
			}
			n++
		}
	}
	return n > 0
}

// StateSummary is "4 AVAILABLE, 2 INITIALIZING": shard replicas by state,
// states sorted.
func (p Placement) StateSummary() string {
	states := p.ShardStates()
	parts := make([]string, 0, len(states))
	for _, s := range slices.Sorted(maps.Keys(states)) {
		parts = append(parts, fmt.Sprintf("%d %s", states[s], s))
	}
	return strings.Join(parts, ", ")
}

// ErrShardsMoving: not every shard is AVAILABLE, so no replica may go down.
var ErrShardsMoving = errors.New("not every shard is AVAILABLE")

// ErrNoPlacement: there is no placement (yet). It wraps ErrShardsMoving: a
// cluster without a placement has no shard AVAILABLE.
var ErrNoPlacement = fmt.Errorf("no placement: %w", ErrShardsMoving)

// AllAvailable asks the coordinator the one "is every shard AVAILABLE?"
// question (Placement.AllAvailable): nil when the placement exists and
// every shard of every instance is AVAILABLE; else ErrNoPlacement, an error
// wrapping ErrShardsMoving, or the read error.
func (c *Client) AllAvailable(ctx context.Context) error {
	p, exists, err := c.Placement(ctx)
	if err != nil {
		return fmt.Errorf("read placement: %w", err)
	}
	if !exists {
		return ErrNoPlacement
	}
	if !p.AllAvailable() {
		return fmt.Errorf("shards %s: %w", p.StateSummary(), ErrShardsMoving)
	}
	return nil
}

// WaitAllAvailable asks AllAvailable every poll until it answers nil (with
// noPlacementOK, also ErrNoPlacement: a lone host before its placement
// exists loses nothing to a restart) or ctx ends.
func (c *Client) WaitAllAvailable(ctx context.Context, poll time.Duration, noPlacementOK bool) error {
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		err := c.AllAvailable(ctx)
		if err == nil || (noPlacementOK && errors.Is(err, ErrNoPlacement)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for every shard AVAILABLE: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// InstanceIDs returns the placement's instance IDs, sorted.
func (p Placement) InstanceIDs() []string {
	ids := make([]string, 0, len(p.Instances))
	for id := range p.Instances {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// placementResponse is admin.PlacementGetResponse (jsonpb, camelCase).
type placementResponse struct {
	Placement *Placement `json:"placement"`
	Version   int        `json:"version"`
}

// Placement reads the m3db placement. M3 answers 404
// {"status":"error","error":"placement does not exist"} when there is none;
// that is exists=false, not an error.
func (c *Client) Placement(ctx context.Context) (Placement, bool, error) {
	var resp placementResponse
	err := c.do(ctx, http.MethodGet, pathPlacement, "", nil, &resp, true)
	if errors.Is(err, ErrNotFound) {
		return Placement{}, false, nil
	}
	if err != nil {
		return Placement{}, false, err
	}
	if resp.Placement == nil {
		return Placement{}, false, fmt.Errorf("GET %s: answer has no placement", pathPlacement)
	}
	p := *resp.Placement
	p.Version = resp.Version
	return p, true, nil
}

// placementInitRequest is admin.PlacementInitRequest; jsonpb accepts the
// proto field names.
type placementInitRequest struct {
	NumShards         int            `json:"num_shards"`
	ReplicationFactor int            `json:"replication_factor"`
	Instances         []wireInstance `json:"instances"`
}

type wireInstance struct {
	ID             string `json:"id"`
	IsolationGroup string `json:"isolation_group"`
	Zone           string `json:"zone"`
	Weight         uint32 `json:"weight"`
	Endpoint       string `json:"endpoint"`
	Hostname       string `json:"hostname"`
	Port           uint32 `json:"port"`
}

func (c *Client) wireInstances(instances []Instance) ([]wireInstance, error) {
	out := make([]wireInstance, 0, len(instances))
	seen := make(map[string]bool)
	for _, in := range instances {
		if in.ID == "" || in.Endpoint == "" || in.IsolationGroup == "" {
			return nil, fmt.Errorf("instance %q: id, endpoint and isolation group are required", in.ID)
		}
		if seen[in.ID] {
			return nil, fmt.Errorf("instance %q: duplicate id", in.ID)
		}
		seen[in.ID] = true
		w := wireInstance{
			ID: in.ID, IsolationGroup: in.IsolationGroup, Zone: in.Zone, Weight: in.Weight,
			Endpoint: in.Endpoint, Hostname: in.Hostname, Port: in.Port,
		}
		if w.Zone == "" {
			w.Zone = c.zone()
		}
		if w.Weight == 0 {
			w.Weight = 100
		}
		out = append(out, w)
	}
	return out, nil
}

// InitPlacement creates the m3db placement. M3 answers 409 (ErrAlreadyExists)
// when one exists; it never replaces an existing placement.
func (c *Client) InitPlacement(ctx context.Context, numShards, rf int, instances []Instance) error {
	if numShards <= 0 || rf <= 0 {
		return fmt.Errorf("init placement: num shards %d and replication factor %d must be positive", numShards, rf)
	}
	if len(instances) < rf {
		return fmt.Errorf("init placement: %d instances cannot hold replication factor %d", len(instances), rf)
	}
	wi, err := c.wireInstances(instances)
	if err != nil {
		return fmt.Errorf("init placement: %w", err)
	}
	req := placementInitRequest{NumShards: numShards, ReplicationFactor: rf, Instances: wi}
	return c.do(ctx, http.MethodPost, pathPlacementInit, "", req, nil, true)
}

// AddInstance adds one instance to the placement (M3's placement add). M3
// refuses it, 400, unless every shard is AVAILABLE; its shards then
// initialize on the new instance.
func (c *Client) AddInstance(ctx context.Context, in Instance) error {
	wi, err := c.wireInstances([]Instance{in})
	if err != nil {
		return fmt.Errorf("add instance: %w", err)
	}
	req := struct {
		Instances []wireInstance `json:"instances"`
	}{wi}
	return c.do(ctx, http.MethodPost, pathPlacement, "", req, nil, true)
}

// RemoveInstance removes one instance from the placement; its shards move
// to the others. M3 answers 404 (ErrNotFound) when it is not there.
func (c *Client) RemoveInstance(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("remove instance: empty id")
	}
	return c.do(ctx, http.MethodDelete, pathPlacement+"/"+url.PathEscape(id), "", nil, nil, true)
}
