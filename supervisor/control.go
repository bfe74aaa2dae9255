package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/m3sup/m3sup/supervisor/agent"
	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/spec"
	"github.com/m3sup/m3sup/supervisor/store"
)

// errStarting is returned by control calls before etcd is up.
var errStarting = errors.New("m3sup is still starting: try again in a moment")

// controlAPI is this host's api.Controller: the desired state (get and
// apply, with a prediction of what an apply restarts), the components'
// controls and their log paths. It reaches the daemon only through its
// fields.
type controlAPI struct {
	Node    string
	DataDir string
	Roles   []string // this host's cluster.roles
	// Store is the desired state in etcd; nil while etcd starts.
	Store func() *store.Store
	// Agent runs this host's components; nil until they first start.
	Agent func() *agent.Agent
	// Running is the cluster spec this host acts on (the last good one).
	Running func() spec.Cluster
	// Renderer returns how this host renders its components with release
	// r, false when it has not fetched r (then predict cannot tell without
	// I/O).
	Renderer func(r spec.Release) (renderFunc, bool)
}

// renderFunc renders the components this host runs for a desired spec and
// its controls, writing nothing.
type renderFunc func(desired spec.Cluster, controls spec.HostControls) ([]agent.Component, error)

var _ api.Controller = (*controlAPI)(nil)

func (a *controlAPI) storeReady() (*store.Store, error) {
	if st := a.Store(); st != nil {
		return st, nil
	}
	return nil, errStarting
}

// Cluster implements api.Controller.
func (a *controlAPI) Cluster(ctx context.Context) (api.ClusterDoc, error) {
	st, err := a.storeReady()
	if err != nil {
		return api.ClusterDoc{}, err
	}
	c, rev, found, err := st.Cluster(ctx)
	if err != nil {
		return api.ClusterDoc{}, err
	}
	if !found {
		return api.ClusterDoc{}, api.Errorf(api.ErrNotFound, "no cluster spec in etcd yet")
	}
	return api.ClusterDoc{Revision: rev, Spec: c}, nil
}

// ApplyCluster implements api.Controller: validate, compare, and write with
// a revision check. Nothing is written when the spec is invalid, the
// revision is stale or dryRun is set.
func (a *controlAPI) ApplyCluster(ctx context.Context, doc api.ClusterDoc, dryRun bool) (api.ApplyResult, error) {
	st, err := a.storeReady()
	if err != nil {
		return api.ApplyResult{}, err
	}
	cur, rev, _, err := st.Cluster(ctx)
	var ve *store.ValueError
	if errors.As(err, &ve) {
		// The stored spec is unusable: a valid one replaces it, checked
		// against the spec this host runs (the last good one).
		cur, err = a.Running(), nil
	}
	if err != nil {
		return api.ApplyResult{}, err
	}
	next := doc.Spec
	if err := validateTransition(cur, next); err != nil {
		return api.ApplyResult{}, api.Errorf(api.ErrInvalid, "invalid cluster spec:\n  %s", strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	expect := doc.Revision
	if expect == 0 {
		expect = rev
	}
	if expect != rev {
		return api.ApplyResult{}, api.Errorf(api.ErrConflict,
			"conflict: the cluster spec changed since revision %d (now %d); run `m3sup get cluster`, redo the change and apply again", expect, rev)
	}
	res := api.ApplyResult{Changes: diffSpecs(cur, next), Restarts: []string{}}
	res.Restarts, res.InPlace, err = a.predict(ctx, st, cur, next)
	if err != nil {
		return res, api.Errorf(api.ErrInvalid, "invalid cluster spec: %v", err)
	}
	if dryRun || len(res.Changes) == 0 {
		res.Revision = rev
		return res, nil
	}
	newRev, err := st.PutCluster(ctx, next, expect)
	if errors.Is(err, store.ErrConflict) {
		return res, api.Errorf(api.ErrConflict, "%v", err)
	}
	if err != nil {
		return res, err
	}
	res.Applied, res.Revision = true, newRev
	return res, nil
}

// validateTransition is spec validation plus what cannot change once M3's
// placement exists.
func validateTransition(cur, next spec.Cluster) error {
	var errs []error
	if err := next.Validate(); err != nil {
		errs = append(errs, err)
	}
	fixed := []struct {
		path     string
		old, new any
	}{
		{"m3.numShards", cur.M3.NumShards, next.M3.NumShards},
		{"m3.replicationFactor", cur.M3.ReplicationFactor, next.M3.ReplicationFactor},
		{"m3.env", cur.M3.Env, next.M3.Env},
		{"m3.zone", cur.M3.Zone, next.M3.Zone},
		{"m3.isolationGroup", cur.M3.IsolationGroup, next.M3.IsolationGroup},
	}
	for _, f := range fixed {
		if cur.M3.NumShards != 0 && f.old != f.new {
			errs = append(errs, fmt.Errorf("%s: cannot change from %v to %v once the placement exists", f.path, f.old, f.new))
		}
	}
	for i, ns := range next.M3.Namespaces {
		for _, old := range cur.M3.Namespaces {
			if old.Name != ns.Name {
				continue
			}
			if old.BlockSize != ns.BlockSize || old.BufferPast != ns.BufferPast || old.BufferFuture != ns.BufferFuture || old.IndexEnabled != ns.IndexEnabled {
				errs = append(errs, fmt.Errorf("m3.namespaces[%d]: only retention can change for an existing namespace (%s)", i, ns.Name))
			}
		}
	}
	for i, old := range cur.M3.Namespaces {
		found := false
		for _, ns := range next.M3.Namespaces {
			found = found || ns.Name == old.Name
		}
		if !found {
			errs = append(errs, fmt.Errorf("m3.namespaces: namespace %q (was [%d]) cannot be removed by m3sup; delete it through M3's API", old.Name, i))
		}
	}
	return errors.Join(errs...)
}

// predict says which components an apply restarts (by comparing the
// rendered specs' hashes with what the agent runs now) and what M3 changes
// in place.
func (a *controlAPI) predict(ctx context.Context, st *store.Store, cur, next spec.Cluster) (restarts, inPlace []string, err error) {
	restarts = []string{}
	for _, ns := range next.M3.Namespaces {
		var old *spec.Namespace
		for i := range cur.M3.Namespaces {
			if cur.M3.Namespaces[i].Name == ns.Name {
				old = &cur.M3.Namespaces[i]
			}
		}
		switch {
		case old == nil:
			inPlace = append(inPlace, fmt.Sprintf("namespace %s: created", ns.Name))
		case old.Retention != ns.Retention:
			inPlace = append(inPlace, fmt.Sprintf("namespace %s: retention %s → %s", ns.Name, old.Retention, ns.Retention))
		}
	}
	ag := a.Agent() // etcd runs: the store is ready
	if ag == nil {
		return restarts, inPlace, nil
	}
	render, haveRel := a.Renderer(cur.Release)
	if next.Release != cur.Release {
		for _, c := range ag.Statuses() {
			restarts = append(restarts, c.Name+" (release "+cur.Release.Version+" → "+next.Release.Version+")")
		}
		return restarts, inPlace, nil
	}
	if !haveRel {
		return restarts, inPlace, nil
	}
	controls, _, err := st.Controls(ctx, a.Node)
	var ve *store.ValueError
	if err != nil && !errors.As(err, &ve) { // corrupt controls count as none, as the reconcile does
		return nil, nil, err
	}
	comps, err := render(next, controls)
	if err != nil {
		return nil, nil, err
	}
	for _, c := range comps {
		if st, ok := ag.Status(c.Name); ok && st.DesiredHash != c.Hash {
			restarts = append(restarts, c.Name+" (config changed)")
		}
	}
	return restarts, inPlace, nil
}

// diffSpecs lists changed fields as "path: old → new".
func diffSpecs(a, b spec.Cluster) []string {
	fa, fb := flatten(a), flatten(b)
	keys := map[string]bool{}
	for k := range fa {
		keys[k] = true
	}
	for k := range fb {
		keys[k] = true
	}
	var out []string
	for k := range keys {
		va, oka := fa[k]
		vb, okb := fb[k]
		switch {
		case !oka:
			out = append(out, fmt.Sprintf("%s: (unset) → %s", k, vb))
		case !okb:
			out = append(out, fmt.Sprintf("%s: %s → (unset)", k, va))
		case va != vb:
			out = append(out, fmt.Sprintf("%s: %s → %s", k, va, vb))
		}
	}
	sort.Strings(out)
	if out == nil {
		out = []string{}
	}
	return out
}

func flatten(v any) map[string]string {
	b, _ := json.Marshal(v)
	var tree any
	_ = json.Unmarshal(b, &tree)
	out := map[string]string{}
	var walk func(prefix string, t any)
	walk = func(prefix string, t any) {
		switch x := t.(type) {
		case map[string]any:
			for k, v := range x {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				walk(p, v)
			}
		case []any:
			for i, v := range x {
				walk(fmt.Sprintf("%s[%d]", prefix, i), v)
			}
		default:
			b, _ := json.Marshal(x)
			out[prefix] = string(b)
		}
	}
	walk("", tree)
	return out
}

// Control implements api.Controller.
func (a *controlAPI) Control(ctx context.Context, component, action string) (api.ControlResult, error) {
	if err := a.hasComponent(component); err != nil {
		return api.ControlResult{}, err
	}
	st, err := a.storeReady()
	if err != nil {
		return api.ControlResult{}, err
	}
	c, err := st.UpdateControl(ctx, a.Node, component, func(c *spec.Control) {
		switch action {
		case "restart":
			c.RestartGeneration++
			c.Stopped = false
		case "stop":
			c.Stopped = true
		case "start":
			c.Stopped = false
		}
	})
	if err != nil {
		return api.ControlResult{}, err
	}
	return api.ControlResult{Component: component, Control: c}, nil
}

// hasComponent reports whether this host runs component (by its roles).
func (a *controlAPI) hasComponent(component string) error {
	role := map[string]string{DBNode: config.RoleDBNode, Coordinator: config.RoleCoordinator}[component]
	if role == "" {
		return api.Errorf(api.ErrNotFound, "no component %q (have %s, %s)", component, DBNode, Coordinator)
	}
	if !slices.Contains(a.Roles, role) {
		return api.Errorf(api.ErrNotFound, "this host runs no %s (cluster.roles: %v)", component, a.Roles)
	}
	return nil
}

// LogPath implements api.Controller.
func (a *controlAPI) LogPath(component string) (string, error) {
	if component != DBNode && component != Coordinator {
		return "", api.Errorf(api.ErrNotFound, "no component %q (have %s, %s)", component, DBNode, Coordinator)
	}
	return layout{root: a.DataDir}.componentLog(component), nil
}
