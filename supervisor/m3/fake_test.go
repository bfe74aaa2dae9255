package m3

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeCoordinator mimics the parts of an M3 v1.5.0 coordinator and its
// dbnodes that Bootstrap touches, answering with M3's status codes and JSON
// shapes (jsonpb: camelCase, int64 as strings, enums by name). State moves
// forward on requests, not on time: after a namespace exists, each placement
// GET turns one shard replica per instance from INITIALIZING to AVAILABLE.
type fakeCoordinator struct {
	t        *testing.T
	env      string
	zone     string
	srv      *httptest.Server
	nodeSrvs []*httptest.Server

	mu              sync.Mutex
	placement       *fakePlacement
	namespaces      map[string]*fakeNamespace
	nsOrder         []string
	healthFailures  int // /health answers 503 this many times first
	readyFailures   int // namespace/ready answers 500 this many times once shards are AVAILABLE
	freezeShards    bool
	placementErrors int // GET placement answers 503 this many times first
	initStatus      int // if non-zero, placement/init answers this status
	mutations       []string
	headerProblems  []string
	readyCalls      int
}

type fakePlacement struct {
	numShards, rf int
	version       int
	instances     map[string]*fakeInstance
}

type fakeInstance struct {
	ID, IsolationGroup, Zone, Endpoint, Hostname string
	Weight, Port                                 uint32
	shards                                       []uint32
	available                                    int // shards[:available] are AVAILABLE
}

type fakeNamespace struct {
	retention, blockSize, bufferPast, bufferFuture, indexBlockSize time.Duration
	indexEnabled                                                   bool
	status                                                         string
	raw                                                            map[string]any
}

func newFakeCoordinator(t *testing.T, env string, nodes int) *fakeCoordinator {
	f := &fakeCoordinator{t: t, env: env, zone: DefaultZone, namespaces: map[string]*fakeNamespace{}}
	if env == "" {
		f.env = DefaultEnv // a Client with an empty Env must send the default
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	for i := 0; i < nodes; i++ {
		s := httptest.NewServer(http.HandlerFunc(f.serveNode))
		t.Cleanup(s.Close)
		f.nodeSrvs = append(f.nodeSrvs, s)
	}
	return f
}

func (f *fakeCoordinator) client() *Client {
	env := f.env
	if env == DefaultEnv {
		env = ""
	}
	return &Client{BaseURL: f.srv.URL, Env: env, HTTP: f.srv.Client()}
}

func (f *fakeCoordinator) nodeURLs() []string {
	var out []string
	for _, s := range f.nodeSrvs {
		out = append(out, s.URL)
	}
	return out
}

func (f *fakeCoordinator) mutationCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.mutations)
}

func (f *fakeCoordinator) checkHeaders() {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.headerProblems {
		f.t.Error(p)
	}
}

func writeM3Error(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// xhttp.ErrorResponse: status first, then error.
	_ = json.NewEncoder(w).Encode(struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	}{"error", msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeCoordinator) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path == pathHealth {
		if f.healthFailures > 0 {
			f.healthFailures--
			writeM3Error(w, http.StatusServiceUnavailable, "starting")
			return
		}
		writeJSON(w, map[string]string{"uptime": "1s", "now": time.Now().String()})
		return
	}
	if r.Method != http.MethodGet {
		f.mutations = append(f.mutations, r.Method+" "+r.URL.Path)
	}
	switch r.URL.Path {
	case pathPlacement, pathPlacementInit, pathNamespace, pathNamespaceReady:
		env, zone := r.Header.Get(headerEnvironment), r.Header.Get(headerZone)
		if env != f.env || zone != f.zone {
			f.headerProblems = append(f.headerProblems,
				fmt.Sprintf("%s %s: headers env=%q zone=%q, want %q %q", r.Method, r.URL.Path, env, zone, f.env, f.zone))
		}
	}
	switch {
	case r.URL.Path == pathPlacement && r.Method == http.MethodGet:
		f.getPlacement(w)
	case r.URL.Path == pathPlacementInit && r.Method == http.MethodPost:
		f.initPlacement(w, r)
	case r.URL.Path == pathNamespace && r.Method == http.MethodGet:
		f.getNamespaces(w)
	case r.URL.Path == pathNamespace && r.Method == http.MethodPost:
		f.addNamespace(w, r)
	case r.URL.Path == pathNamespace && r.Method == http.MethodPut:
		f.updateNamespace(w, r)
	case r.URL.Path == pathNamespaceReady && r.Method == http.MethodPost:
		f.ready(w, r)
	default:
		writeM3Error(w, http.StatusNotFound, "no route")
	}
}

func (f *fakeCoordinator) allAvailable() bool {
	if f.placement == nil {
		return false
	}
	for _, in := range f.placement.instances {
		if in.available < len(in.shards) {
			return false
		}
	}
	return true
}

func (f *fakeCoordinator) serveNode(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/health" {
		http.NotFound(w, r)
		return
	}
	f.mu.Lock()
	booted := f.allAvailable()
	f.mu.Unlock()
	writeJSON(w, map[string]any{"ok": true, "status": "up", "bootstrapped": booted, "metadata": map[string]string{}})
}

func (f *fakeCoordinator) getPlacement(w http.ResponseWriter) {
	if f.placementErrors > 0 {
		f.placementErrors--
		writeM3Error(w, http.StatusServiceUnavailable, "etcd unavailable")
		return
	}
	if f.placement == nil {
		writeM3Error(w, http.StatusNotFound, "placement does not exist")
		return
	}
	p := f.placement
	if len(f.namespaces) > 0 && !f.freezeShards {
		for _, in := range p.instances {
			if in.available < len(in.shards) {
				in.available++
			}
		}
	}
	insts := map[string]any{}
	for id, in := range p.instances {
		var shards []map[string]any
		for i, s := range in.shards {
			state := ShardInitializing
			if i < in.available {
				state = ShardAvailable
			}
			shards = append(shards, map[string]any{"id": s, "state": state, "sourceId": "", "cutoverNanos": "0", "cutoffNanos": "0", "redirectToShardId": nil})
		}
		insts[id] = map[string]any{
			"id": id, "isolationGroup": in.IsolationGroup, "zone": in.Zone, "weight": in.Weight,
			"endpoint": in.Endpoint, "shards": shards, "shardSetId": 0, "hostname": in.Hostname,
			"port": in.Port, "metadata": map[string]any{"debugPort": 0},
		}
	}
	writeJSON(w, map[string]any{
		"placement": map[string]any{
			"instances": insts, "replicaFactor": p.rf, "numShards": p.numShards, "isSharded": true,
			"cutoverTime": "0", "isMirrored": false, "maxShardSetId": 0,
		},
		"version": p.version,
	})
}

func (f *fakeCoordinator) seedPlacement(numShards, rf int, ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := &fakePlacement{numShards: numShards, rf: rf, version: 1, instances: map[string]*fakeInstance{}}
	for _, id := range ids {
		p.instances[id] = &fakeInstance{ID: id, IsolationGroup: id, Zone: DefaultZone, Endpoint: id + ":9000", Weight: 100}
	}
	assignShards(p)
	f.placement = p
}

func assignShards(p *fakePlacement) {
	ids := make([]string, 0, len(p.instances))
	for id := range p.instances {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for s := 0; s < p.numShards; s++ {
		for r := 0; r < p.rf; r++ {
			in := p.instances[ids[(s+r)%len(ids)]]
			in.shards = append(in.shards, uint32(s))
		}
	}
}

func (f *fakeCoordinator) initPlacement(w http.ResponseWriter, r *http.Request) {
	if f.initStatus != 0 {
		writeM3Error(w, f.initStatus, "unable to build initial placement: not enough isolation groups")
		return
	}
	if f.placement != nil {
		writeM3Error(w, http.StatusConflict, "key already has a value") // real v1.5.0 text
		return
	}
	var req struct {
		NumShards         int `json:"num_shards"`
		ReplicationFactor int `json:"replication_factor"`
		Instances         []struct {
			ID             string `json:"id"`
			IsolationGroup string `json:"isolation_group"`
			Zone           string `json:"zone"`
			Weight         uint32 `json:"weight"`
			Endpoint       string `json:"endpoint"`
			Hostname       string `json:"hostname"`
			Port           uint32 `json:"port"`
		} `json:"instances"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeM3Error(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.NumShards <= 0 || req.ReplicationFactor <= 0 || len(req.Instances) < req.ReplicationFactor {
		writeM3Error(w, http.StatusBadRequest, "bad placement request")
		return
	}
	p := &fakePlacement{numShards: req.NumShards, rf: req.ReplicationFactor, version: 1, instances: map[string]*fakeInstance{}}
	for _, in := range req.Instances {
		if in.Zone != f.zone || in.Weight == 0 || in.IsolationGroup == "" {
			writeM3Error(w, http.StatusBadRequest, "bad instance "+in.ID)
			return
		}
		p.instances[in.ID] = &fakeInstance{ID: in.ID, IsolationGroup: in.IsolationGroup, Zone: in.Zone,
			Endpoint: in.Endpoint, Hostname: in.Hostname, Weight: in.Weight, Port: in.Port}
	}
	assignShards(p)
	f.placement = p
	writeJSON(w, map[string]any{"placement": map[string]any{"numShards": p.numShards}, "version": 0})
}

func nanosString(d time.Duration) string { return strconv.FormatInt(int64(d), 10) }

func (f *fakeCoordinator) getNamespaces(w http.ResponseWriter) {
	nss := map[string]any{}
	for name, ns := range f.namespaces {
		nss[name] = map[string]any{
			"bootstrapEnabled": true, "flushEnabled": true, "writesToCommitLog": true,
			"cleanupEnabled": true, "repairEnabled": false, "snapshotEnabled": true,
			"retentionOptions": map[string]any{
				"retentionPeriodNanos": nanosString(ns.retention), "blockSizeNanos": nanosString(ns.blockSize),
				"bufferFutureNanos": nanosString(ns.bufferFuture), "bufferPastNanos": nanosString(ns.bufferPast),
				"blockDataExpiry": true, "blockDataExpiryAfterNotAccessPeriodNanos": "300000000000",
				"futureRetentionPeriodNanos": "0",
			},
			"indexOptions":  map[string]any{"enabled": ns.indexEnabled, "blockSizeNanos": nanosString(ns.indexBlockSize)},
			"schemaOptions": nil, "coldWritesEnabled": false, "runtimeOptions": nil,
			"cacheBlocksOnRetrieve": false, "aggregationOptions": map[string]any{"aggregations": []any{}},
			"stagingState": map[string]any{"status": ns.status}, "extendedOptions": nil,
		}
	}
	writeJSON(w, map[string]any{"registry": map[string]any{"namespaces": nss}})
}

func (f *fakeCoordinator) addNamespace(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name    string         `json:"name"`
		Options map[string]any `json:"options"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeM3Error(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, ok := f.namespaces[req.Name]; ok {
		writeM3Error(w, http.StatusConflict, "namespace with the same ID already exists")
		return
	}
	ro, _ := req.Options["retentionOptions"].(map[string]any)
	io_, _ := req.Options["indexOptions"].(map[string]any)
	dur := func(m map[string]any, k string) (time.Duration, bool) {
		s, ok := m[k].(string)
		if !ok {
			return 0, false
		}
		d, err := time.ParseDuration(s)
		return d, err == nil
	}
	ns := &fakeNamespace{status: StagingUnknown, raw: req.Options}
	var ok [5]bool
	ns.retention, ok[0] = dur(ro, "retentionPeriodDuration")
	ns.blockSize, ok[1] = dur(ro, "blockSizeDuration")
	ns.bufferPast, ok[2] = dur(ro, "bufferPastDuration")
	ns.bufferFuture, ok[3] = dur(ro, "bufferFutureDuration")
	ns.indexBlockSize, ok[4] = dur(io_, "blockSizeDuration")
	for i, v := range ok {
		if !v {
			writeM3Error(w, http.StatusBadRequest, fmt.Sprintf("error converting duration to nanos (field %d)", i))
			return
		}
	}
	ns.indexEnabled, _ = io_["enabled"].(bool)
	ao, _ := req.Options["aggregationOptions"].(map[string]any)
	if aggs, _ := ao["aggregations"].([]any); len(aggs) == 0 {
		// M3 accepts it but the coordinator never serves it; fail loudly here.
		writeM3Error(w, http.StatusBadRequest, "fake: namespace without aggregations is never served")
		return
	}
	f.namespaces[req.Name] = ns
	f.nsOrder = append(f.nsOrder, req.Name)
	writeJSON(w, map[string]any{"registry": map[string]any{}})
}

func (f *fakeCoordinator) updateNamespace(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name    string `json:"name"`
		Options struct {
			RetentionOptions map[string]any `json:"retentionOptions"`
		} `json:"options"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeM3Error(w, http.StatusBadRequest, err.Error())
		return
	}
	ns, ok := f.namespaces[req.Name]
	if !ok {
		writeM3Error(w, http.StatusNotFound, "namespace not found: err="+req.Name)
		return
	}
	for k := range req.Options.RetentionOptions {
		if k != "retentionPeriodDuration" {
			writeM3Error(w, http.StatusBadRequest, "unable to validate update request: RetentionOptions."+k+": namespace option field is immutable")
			return
		}
	}
	d, err := time.ParseDuration(fmt.Sprint(req.Options.RetentionOptions["retentionPeriodDuration"]))
	if err != nil {
		writeM3Error(w, http.StatusBadRequest, err.Error())
		return
	}
	ns.retention = d
	writeJSON(w, map[string]any{"registry": map[string]any{}})
}

func (f *fakeCoordinator) ready(w http.ResponseWriter, r *http.Request) {
	f.readyCalls++
	var req struct {
		Name  string `json:"name"`
		Force bool   `json:"force"`
	}
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &req); err != nil {
		writeM3Error(w, http.StatusBadRequest, err.Error())
		return
	}
	ns, ok := f.namespaces[req.Name]
	if !ok {
		writeM3Error(w, http.StatusBadRequest, "namespace "+req.Name+" not found")
		return
	}
	if ns.status == StagingReady {
		writeJSON(w, map[string]bool{"ready": true})
		return
	}
	if !f.allAvailable() || f.readyFailures > 0 {
		if f.allAvailable() {
			f.readyFailures--
		}
		writeM3Error(w, http.StatusInternalServerError, "namepace "+req.Name+" not yet ready, err: failed to meet consistency level majority with 0/1 success")
		return
	}
	ns.status = StagingReady
	writeJSON(w, map[string]bool{"ready": true})
}
