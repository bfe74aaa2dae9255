package cluster

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/m3sup/m3sup/supervisor/m3"
)

// fakeM3 is a coordinator with just the placement API: get, init, add and
// remove, with M3's status codes. Shards move only when the test says so:
// init gives every shard initState; an add puts shard 0 INITIALIZING on the
// new instance and LEAVING on a donor; a remove puts one shard of a
// remaining instance INITIALIZING. settle() finishes every move. Add and
// remove answer 400 unless every shard is AVAILABLE, as M3 does.
type fakeM3 struct {
	srv *httptest.Server

	mu        sync.Mutex
	p         *m3.Placement
	version   int
	initState string
	mutations []string // "init h1,h2,h3", "add h4", "remove h4"
}

func newFakeM3(t *testing.T) *fakeM3 {
	f := &fakeM3{initState: m3.ShardAvailable}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeM3) client() *m3.Client {
	return &m3.Client{BaseURL: f.srv.URL, HTTP: f.srv.Client()}
}

// set makes p the placement M3 answers with.
func (f *fakeM3) set(p m3.Placement) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.p = &p
	f.version++
}

func (f *fakeM3) muts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.mutations)
}

func (f *fakeM3) placement() (m3.Placement, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.p == nil {
		return m3.Placement{}, false
	}
	return *f.p, true
}

func (f *fakeM3) setInitState(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.initState = s
}

// settle finishes every shard move.
func (f *fakeM3) settle() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, in := range f.p.Instances {
		var shards []m3.Shard
		for _, s := range in.Shards {
			if s.State != m3.ShardLeaving {
				shards = append(shards, m3.Shard{ID: s.ID, State: m3.ShardAvailable})
			}
		}
		in.Shards = shards
		f.p.Instances[id] = in
	}
	f.version++
}

func m3Error(w http.ResponseWriter, code int, msg string) {
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"status": "error", "error": msg})
}

type fakeInstance struct {
	ID             string `json:"id"`
	IsolationGroup string `json:"isolation_group"`
	Endpoint       string `json:"endpoint"`
	Weight         uint32 `json:"weight"`
}

func (f *fakeM3) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Cluster-Environment-Name") != m3.DefaultEnv || r.Header.Get("Cluster-Zone-Name") != m3.DefaultZone {
		m3Error(w, http.StatusBadRequest, "missing env/zone headers")
		return
	}
	const base = "/api/v1/services/m3db/placement"
	switch {
	case r.Method == http.MethodGet && r.URL.Path == base:
		if f.p == nil {
			m3Error(w, http.StatusNotFound, "placement does not exist")
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"placement": f.p, "version": f.version})
	case r.Method == http.MethodPost && r.URL.Path == base+"/init":
		var req struct {
			NumShards int            `json:"num_shards"`
			RF        int            `json:"replication_factor"`
			Instances []fakeInstance `json:"instances"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			m3Error(w, http.StatusBadRequest, err.Error())
			return
		}
		var ids []string
		for _, in := range req.Instances {
			ids = append(ids, in.ID)
		}
		f.mutations = append(f.mutations, "init "+strings.Join(ids, ","))
		if f.p != nil {
			m3Error(w, http.StatusConflict, "placement already exists")
			return
		}
		p := &m3.Placement{Instances: map[string]m3.PlacementInstance{}, NumShards: req.NumShards, ReplicaFactor: req.RF, IsSharded: true}
		for i, in := range req.Instances {
			pi := m3.PlacementInstance{ID: in.ID, IsolationGroup: in.IsolationGroup, Endpoint: in.Endpoint, Weight: in.Weight}
			for s := range req.NumShards {
				for rep := range req.RF {
					if (s+rep)%len(req.Instances) == i {
						pi.Shards = append(pi.Shards, m3.Shard{ID: uint32(s), State: f.initState})
					}
				}
			}
			p.Instances[in.ID] = pi
		}
		f.p, f.version = p, 1
		_ = json.NewEncoder(w).Encode(map[string]any{"placement": f.p, "version": f.version})
	case r.Method == http.MethodPost && r.URL.Path == base:
		var req struct {
			Instances []fakeInstance `json:"instances"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Instances) != 1 {
			m3Error(w, http.StatusBadRequest, "want one instance")
			return
		}
		in := req.Instances[0]
		f.mutations = append(f.mutations, "add "+in.ID)
		if f.p == nil {
			m3Error(w, http.StatusNotFound, "placement does not exist")
			return
		}
		if !f.p.AllAvailable() {
			m3Error(w, http.StatusBadRequest, "instances do not have all shards available")
			return
		}
		donor := f.p.Instances[f.p.InstanceIDs()[0]]
		donor.Shards[0].State = m3.ShardLeaving
		f.p.Instances[donor.ID] = donor
		f.p.Instances[in.ID] = m3.PlacementInstance{ID: in.ID, IsolationGroup: in.IsolationGroup, Endpoint: in.Endpoint, Weight: in.Weight,
			Shards: []m3.Shard{{ID: donor.Shards[0].ID, State: m3.ShardInitializing}}}
		f.version++
		_ = json.NewEncoder(w).Encode(map[string]any{"placement": f.p, "version": f.version})
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, base+"/"):
		id := strings.TrimPrefix(r.URL.Path, base+"/")
		f.mutations = append(f.mutations, "remove "+id)
		if f.p == nil || f.p.Instances[id].ID == "" {
			m3Error(w, http.StatusNotFound, "instance not found")
			return
		}
		if !f.p.AllAvailable() {
			m3Error(w, http.StatusBadRequest, "instances do not have all shards available")
			return
		}
		delete(f.p.Instances, id)
		if ids := f.p.InstanceIDs(); len(ids) > 0 {
			in := f.p.Instances[ids[0]]
			in.Shards = append(in.Shards, m3.Shard{ID: 1000, State: m3.ShardInitializing})
			f.p.Instances[ids[0]] = in
		}
		f.version++
		_ = json.NewEncoder(w).Encode(map[string]any{"placement": f.p, "version": f.version})
	default:
		m3Error(w, http.StatusNotFound, "no route "+r.Method+" "+r.URL.Path)
	}
}
