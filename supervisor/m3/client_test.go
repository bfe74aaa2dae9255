package m3

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// stub serves one canned answer and records the last request.
type stub struct {
	status int
	body   string
	method string
	path   string
	query  string
	header http.Header
	req    []byte
}

func (s *stub) client(t *testing.T) *Client {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.method, s.path, s.query, s.header = r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone()
		s.req, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(s.status)
		_, _ = io.WriteString(w, s.body)
	}))
	t.Cleanup(srv.Close)
	return &Client{BaseURL: srv.URL + "/", Env: "e1", Zone: "z1"}
}

func TestAPIErrorText(t *testing.T) {
	s := &stub{status: 400, body: "  {\"status\":\"error\",\"error\":\"bad\"}\n"}
	err := s.client(t).InitPlacement(context.Background(), 1, 1, []Instance{{ID: "a", IsolationGroup: "g", Endpoint: "a:9000"}})
	want := `POST /api/v1/services/m3db/placement/init: 400 Bad Request: {"status":"error","error":"bad"}`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
	if s.header.Get(headerEnvironment) != "e1" || s.header.Get(headerZone) != "z1" {
		t.Errorf("headers = %v", s.header)
	}
	var body map[string]any
	if err := json.Unmarshal(s.req, &body); err != nil {
		t.Fatal(err)
	}
	inst := body["instances"].([]any)[0].(map[string]any)
	if body["num_shards"] != 1.0 || body["replication_factor"] != 1.0 || inst["isolation_group"] != "g" ||
		inst["zone"] != "z1" || inst["weight"] != 100.0 {
		t.Errorf("init body = %s", s.req)
	}
	long := &stub{status: 500, body: strings.Repeat("x", 2000)}
	err = long.client(t).CoordinatorHealthy(context.Background())
	if err == nil || len(err.Error()) > 600 {
		t.Errorf("body not cut: %d chars", len(err.Error()))
	}
	if !errors.Is((&stub{status: 409}).client(t).AddNamespace(context.Background(), Namespace{Name: "a", Retention: time.Hour * 2}), ErrAlreadyExists) {
		t.Error("409 is not ErrAlreadyExists")
	}
}

// placementJSON is an M3 v1.5.0 GET placement answer (jsonpb, EmitDefaults).
const placementJSON = `{"placement":{"instances":{"m3db_local":{"id":"m3db_local","isolationGroup":"local","zone":"embedded","weight":1,"endpoint":"127.0.0.1:9000","shards":[{"id":0,"state":"AVAILABLE","sourceId":"","cutoverNanos":"0","cutoffNanos":"0","redirectToShardId":null},{"id":1,"state":"INITIALIZING","sourceId":"","cutoverNanos":"0","cutoffNanos":"0","redirectToShardId":null}],"shardSetId":0,"hostname":"localhost","port":9000,"metadata":{"debugPort":0}}},"replicaFactor":1,"numShards":2,"isSharded":true,"cutoverTime":"0","isMirrored":false,"maxShardSetId":0},"version":3}`

func TestPlacement(t *testing.T) {
	s := &stub{status: 200, body: placementJSON}
	p, ok, err := s.client(t).Placement(context.Background())
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	in := p.Instances["m3db_local"]
	if p.Version != 3 || p.NumShards != 2 || p.ReplicaFactor != 1 || in.Port != 9000 || in.IsolationGroup != "local" || len(in.Shards) != 2 {
		t.Errorf("placement = %+v", p)
	}
	if st := p.ShardStates(); st[ShardAvailable] != 1 || st[ShardInitializing] != 1 || p.AllAvailable() {
		t.Errorf("states = %v", st)
	}
	nf := &stub{status: 404, body: `{"status":"error","error":"placement does not exist"}`}
	if _, ok, err := nf.client(t).Placement(context.Background()); ok || err != nil {
		t.Errorf("404: ok=%v err=%v", ok, err)
	}
	bad := &stub{status: 500, body: `{"status":"error","error":"etcd"}`}
	if _, _, err := bad.client(t).Placement(context.Background()); err == nil || !transient(err) {
		t.Errorf("500: %v", err)
	}
}

func TestNamespaces(t *testing.T) {
	s := &stub{status: 200, body: `{"registry":{"namespaces":{"default":{"bootstrapEnabled":true,"retentionOptions":{"retentionPeriodNanos":"172800000000000","blockSizeNanos":"7200000000000","bufferFutureNanos":"600000000000","bufferPastNanos":"600000000000","blockDataExpiry":true},"indexOptions":{"enabled":true,"blockSizeNanos":"7200000000000"},"stagingState":{"status":"READY"}},"fresh":{"retentionOptions":{"retentionPeriodNanos":3600000000000},"indexOptions":{"enabled":false,"blockSizeNanos":"0"},"stagingState":{"status":"UNKNOWN"}},"old":{"retentionOptions":{},"indexOptions":{}}}}}`}
	nss, err := s.client(t).Namespaces(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	d := nss["default"]
	if d.Retention != 48*time.Hour || d.BlockSize != 2*time.Hour || d.BufferPast != 10*time.Minute || !d.IndexEnabled || !d.Ready() {
		t.Errorf("default = %+v", d)
	}
	if f := nss["fresh"]; f.Retention != time.Hour || f.Ready() || f.StagingStatus != StagingUnknown {
		t.Errorf("fresh = %+v", f)
	}
	if o := nss["old"]; o.StagingStatus != StagingUnknown {
		t.Errorf("old = %+v", o)
	}
}

func TestUpdateNamespaceRetention(t *testing.T) {
	s := &stub{status: 200, body: `{"registry":{}}`}
	if err := s.client(t).UpdateNamespaceRetention(context.Background(), "default", 96*time.Hour); err != nil {
		t.Fatal(err)
	}
	if s.method != http.MethodPut || s.path != pathNamespace || string(s.req) != `{"name":"default","options":{"retentionOptions":{"retentionPeriodDuration":"96h0m0s"}}}` {
		t.Errorf("%s %s %s", s.method, s.path, s.req)
	}
	nf := &stub{status: 404, body: `{"status":"error","error":"namespace not found: err=x"}`}
	if err := nf.client(t).UpdateNamespaceRetention(context.Background(), "x", time.Hour); !errors.Is(err, ErrNotFound) {
		t.Errorf("err = %v", err)
	}
}

func TestMarkReady(t *testing.T) {
	for _, c := range []struct {
		name    string
		status  int
		body    string
		ready   bool
		wantErr bool
	}{
		{"ready", 200, `{"ready":true}`, true, false},
		{"nodes not serving", 500, `{"status":"error","error":"namepace default not yet ready, err: failed to meet consistency level"}`, false, false},
		{"coordinator not watching yet", 400, `{"status":"error","error":"could not find db session for namespace: default"}`, false, false},
		{"unknown namespace", 400, `{"status":"error","error":"namespace default not found"}`, false, true},
		{"etcd down", 500, `{"status":"error","error":"context deadline exceeded"}`, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &stub{status: c.status, body: c.body}
			ready, err := s.client(t).MarkReady(context.Background(), "default")
			if ready != c.ready || (err != nil) != c.wantErr {
				t.Errorf("= %v, %v", ready, err)
			}
			if string(s.req) != `{"name":"default"}` || s.header.Get(headerEnvironment) != "e1" {
				t.Errorf("request %s %v", s.req, s.header)
			}
		})
	}
}

func TestWriteAndQuery(t *testing.T) {
	s := &stub{status: 200}
	ts := time.Unix(1700000000, 123e6)
	if err := s.client(t).WriteJSON(context.Background(), "up", map[string]string{"job": "x"}, ts, 2.5); err != nil {
		t.Fatal(err)
	}
	var w jsonWriteRequest
	_ = json.Unmarshal(s.req, &w)
	if s.path != pathJSONWrite || w.Tags["__name__"] != "up" || w.Tags["job"] != "x" || w.Value != 2.5 || w.Timestamp != "2023-11-14T22:13:20.123Z" {
		t.Errorf("write %s %s", s.path, s.req)
	}
	if s.header.Get(headerEnvironment) != "" {
		t.Error("topology headers on a data call")
	}

	q := &stub{status: 200, body: `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"x"},"values":[[1700000000.123,"2.5"],[1700000005,"3"]]}]}}`}
	res, err := q.client(t).QueryRange(context.Background(), "up", ts, ts.Add(time.Minute), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if q.path != pathQueryRange || !strings.Contains(q.query, "step=5s") || !strings.Contains(q.query, "query=up") {
		t.Errorf("query %s?%s", q.path, q.query)
	}
	if res.ResultType != "matrix" || len(res.Series) != 1 || res.Series[0].Metric["job"] != "x" ||
		len(res.Series[0].Points) != 2 || !res.Series[0].Points[0].T.Equal(ts) || res.Series[0].Points[1].V != 3 {
		t.Errorf("result = %+v", res)
	}
}

func TestNodeHealth(t *testing.T) {
	s := &stub{status: 200, body: `{"ok":true,"status":"up","bootstrapped":true,"metadata":{}}`}
	c := s.client(t)
	h, err := NodeHealth(context.Background(), nil, c.BaseURL)
	if err != nil || !h.OK || !h.Bootstrapped || h.Status != "up" || s.path != "/health" {
		t.Errorf("%+v %v %s", h, err, s.path)
	}
}

func TestContextCancelled(t *testing.T) {
	s := &stub{status: 200, body: `{}`}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.client(t).Namespaces(ctx)
	if !errors.Is(err, context.Canceled) || transient(err) {
		t.Errorf("err = %v", err)
	}
}
