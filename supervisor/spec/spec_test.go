package spec_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v2"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/m3sup/m3sup/supervisor/spec"
)

const goodSum = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func validCluster() spec.Cluster {
	return spec.Cluster{
		Release: spec.Release{
			Version:  "1.5.0",
			URL:      "https://example.com/m3_1.5.0_linux_amd64.tar.gz",
			Checksum: goodSum,
		},
		M3: spec.M3{
			Env:               "default_env",
			Zone:              "embedded",
			NumShards:         64,
			ReplicationFactor: 1,
			IsolationGroup:    "rack-a",
			Namespaces: []spec.Namespace{
				{Name: "default", Retention: spec.Duration(48 * time.Hour), BlockSize: spec.Duration(2 * time.Hour),
					BufferPast: spec.Duration(10 * time.Minute), BufferFuture: spec.Duration(2 * time.Minute), IndexEnabled: true},
				{Name: "agg_1m.v2", Retention: spec.Duration(720 * time.Hour), BlockSize: spec.Duration(24 * time.Hour)},
			},
		},
		DBNode:      spec.Component{LogLevel: "info"},
		Coordinator: spec.Component{LogLevel: "warn"},
	}
}

// fieldErrors splits the joined error of Validate into (path, message) pairs,
// in order.
func fieldErrors(t *testing.T, err error) (paths, msgs []string) {
	t.Helper()
	if err == nil {
		return nil, nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		path, msg, ok := strings.Cut(e.Error(), ": ")
		if !ok {
			t.Fatalf("error %q has no path prefix", e)
		}
		paths = append(paths, path)
		msgs = append(msgs, msg)
	}
	return paths, msgs
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name      string
		mutate    func(c *spec.Cluster)
		wantPaths []string // exactly these fields, in this order
		wantMsg   string   // substring of the first message
	}{
		{name: "valid", mutate: func(*spec.Cluster) {}},
		{name: "checksum file URL", mutate: func(c *spec.Cluster) { c.Release.Checksum = "file:https://example.com/SHA256SUMS" }},
		{name: "checksum skipped explicitly", mutate: func(c *spec.Cluster) {
			c.Release.Checksum = ""
			c.Release.InsecureSkipChecksum = true
		}},
		{name: "checksum skip ignores a bad value", mutate: func(c *spec.Cluster) {
			c.Release.Checksum = "md5:abc"
			c.Release.InsecureSkipChecksum = true
		}},
		{name: "checksum missing", mutate: func(c *spec.Cluster) { c.Release.Checksum = "" },
			wantPaths: []string{"release.checksum"}, wantMsg: "insecureSkipChecksum"},
		{name: "checksum wrong algorithm", mutate: func(c *spec.Cluster) { c.Release.Checksum = "md5:d41d8cd98f00b204e9800998ecf8427e" },
			wantPaths: []string{"release.checksum"}, wantMsg: `got "md5:d41d8cd98f00b204e9800998ecf8427e"`},
		{name: "checksum uppercase hex", mutate: func(c *spec.Cluster) { c.Release.Checksum = goodSum[:7] + strings.ToUpper(goodSum[7:]) },
			wantPaths: []string{"release.checksum"}, wantMsg: "64 lowercase hex"},
		{name: "checksum too short", mutate: func(c *spec.Cluster) { c.Release.Checksum = goodSum[:len(goodSum)-1] },
			wantPaths: []string{"release.checksum"}},
		{name: "version and url missing", mutate: func(c *spec.Cluster) { c.Release.Version, c.Release.URL = "", "" },
			wantPaths: []string{"release.version", "release.url"}},
		{name: "numShards 1 is the minimum", mutate: func(c *spec.Cluster) { c.M3.NumShards = 1 }},
		{name: "numShards 4096 is the maximum", mutate: func(c *spec.Cluster) { c.M3.NumShards = 4096 }},
		{name: "numShards 0", mutate: func(c *spec.Cluster) { c.M3.NumShards = 0 },
			wantPaths: []string{"m3.numShards"}, wantMsg: "got 0"},
		{name: "numShards 5000", mutate: func(c *spec.Cluster) { c.M3.NumShards = 5000 },
			wantPaths: []string{"m3.numShards"}, wantMsg: "between 1 and 4096, got 5000"},
		{name: "replicationFactor 0", mutate: func(c *spec.Cluster) { c.M3.ReplicationFactor = 0 },
			wantPaths: []string{"m3.replicationFactor"}, wantMsg: "got 0"},
		{name: "replicationFactor 8", mutate: func(c *spec.Cluster) { c.M3.ReplicationFactor = 8 },
			wantPaths: []string{"m3.replicationFactor"}},
		{name: "env zone isolationGroup missing", mutate: func(c *spec.Cluster) { c.M3.Env, c.M3.Zone, c.M3.IsolationGroup = "", "", "" },
			wantPaths: []string{"m3.env", "m3.zone", "m3.isolationGroup"}},
		{name: "namespaces empty", mutate: func(c *spec.Cluster) { c.M3.Namespaces = nil },
			wantPaths: []string{"m3.namespaces"}, wantMsg: "at least one"},
		{name: "namespaces duplicate", mutate: func(c *spec.Cluster) { c.M3.Namespaces[1].Name = "default" },
			wantPaths: []string{"m3.namespaces[1].name"}, wantMsg: `duplicate namespace "default"`},
		{name: "namespace bad name", mutate: func(c *spec.Cluster) { c.M3.Namespaces[0].Name = "bad name!" },
			wantPaths: []string{"m3.namespaces[0].name"}, wantMsg: `got "bad name!"`},
		{name: "namespace name empty", mutate: func(c *spec.Cluster) { c.M3.Namespaces[1].Name = "" },
			wantPaths: []string{"m3.namespaces[1].name"}},
		{name: "namespace name starts with dot", mutate: func(c *spec.Cluster) { c.M3.Namespaces[1].Name = ".hidden" },
			wantPaths: []string{"m3.namespaces[1].name"}},
		{name: "namespace name 64 chars", mutate: func(c *spec.Cluster) { c.M3.Namespaces[1].Name = strings.Repeat("a", 64) },
			wantPaths: []string{"m3.namespaces[1].name"}},
		{name: "namespace name 63 chars", mutate: func(c *spec.Cluster) { c.M3.Namespaces[1].Name = strings.Repeat("a", 63) }},
		{name: "retention below blockSize", mutate: func(c *spec.Cluster) { c.M3.Namespaces[0].Retention = spec.Duration(time.Hour) },
			wantPaths: []string{"m3.namespaces[0].retention"}, wantMsg: "at least blockSize (2h0m0s)"},
		{name: "retention equal to blockSize", mutate: func(c *spec.Cluster) { c.M3.Namespaces[0].Retention = c.M3.Namespaces[0].BlockSize }},
		{name: "retention zero", mutate: func(c *spec.Cluster) { c.M3.Namespaces[0].Retention = 0 },
			wantPaths: []string{"m3.namespaces[0].retention"}, wantMsg: "positive"},
		{name: "blockSize zero", mutate: func(c *spec.Cluster) { c.M3.Namespaces[1].BlockSize = 0 },
			wantPaths: []string{"m3.namespaces[1].blockSize"}, wantMsg: "positive"},
		{name: "bufferPast negative", mutate: func(c *spec.Cluster) { c.M3.Namespaces[0].BufferPast = spec.Duration(-time.Second) },
			wantPaths: []string{"m3.namespaces[0].bufferPast"}, wantMsg: "negative"},
		{name: "bufferFuture negative", mutate: func(c *spec.Cluster) { c.M3.Namespaces[1].BufferFuture = spec.Duration(-time.Second) },
			wantPaths: []string{"m3.namespaces[1].bufferFuture"}, wantMsg: "negative"},
		{name: "dbnode logLevel bad", mutate: func(c *spec.Cluster) { c.DBNode.LogLevel = "verbose" },
			wantPaths: []string{"dbnode.logLevel"}, wantMsg: `got "verbose"`},
		{name: "coordinator logLevel empty", mutate: func(c *spec.Cluster) { c.Coordinator.LogLevel = "" },
			wantPaths: []string{"coordinator.logLevel"}},
		{name: "several at once, in field order", mutate: func(c *spec.Cluster) {
			c.Release.Checksum = "nope"
			c.M3.NumShards = 5000
			c.M3.ReplicationFactor = 0
			c.M3.Namespaces[0].Name = "bad name"
			c.M3.Namespaces[0].BufferPast = spec.Duration(-time.Minute)
			c.M3.Namespaces[1].Retention = spec.Duration(time.Hour)
			c.DBNode.LogLevel = "loud"
			c.Coordinator.LogLevel = "quiet"
		}, wantPaths: []string{
			"release.checksum",
			"m3.numShards",
			"m3.replicationFactor",
			"m3.namespaces[0].name",
			"m3.namespaces[0].bufferPast",
			"m3.namespaces[1].retention",
			"dbnode.logLevel",
			"coordinator.logLevel",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validCluster()
			tt.mutate(&c)
			err := c.Validate()
			paths, msgs := fieldErrors(t, err)
			if !reflect.DeepEqual(paths, tt.wantPaths) {
				t.Fatalf("error paths %q, want %q\nerror: %v", paths, tt.wantPaths, err)
			}
			if tt.wantMsg != "" && !strings.Contains(msgs[0], tt.wantMsg) {
				t.Fatalf("message %q does not contain %q", msgs[0], tt.wantMsg)
			}
		})
	}
}

// The error text is shown to users and compared in tests; it must not depend
// on map iteration order.
func TestValidateOrderIsStable(t *testing.T) {
	c := validCluster()
	c.DBNode.LogLevel = "x"
	c.Coordinator.LogLevel = "y"
	want := c.Validate().Error()
	for range 200 {
		if got := c.Validate().Error(); got != want {
			t.Fatalf("error text changed between calls:\n%s\n---\n%s", want, got)
		}
	}
	if i, j := strings.Index(want, "dbnode.logLevel"), strings.Index(want, "coordinator.logLevel"); i < 0 || j < i {
		t.Fatalf("want dbnode before coordinator in:\n%s", want)
	}
}

func TestDurationJSON(t *testing.T) {
	var d spec.Duration
	if err := json.Unmarshal([]byte(`"48h"`), &d); err != nil {
		t.Fatal(err)
	}
	if d.D() != 48*time.Hour {
		t.Fatalf("got %s, want 48h", d)
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `"48h0m0s"` {
		t.Fatalf("marshalled %s", b)
	}
	var back spec.Duration
	if err := json.Unmarshal(b, &back); err != nil || back != d {
		t.Fatalf("round trip: %s, %v", back, err)
	}

	for _, tc := range []struct{ in, want string }{
		{`"2d"`, `invalid duration "2d": use Go durations like 48h`},
		{`""`, `invalid duration ""`},
		{`3600`, `duration must be a string like "48h"`},
	} {
		var d spec.Duration
		err := json.Unmarshal([]byte(tc.in), &d)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("unmarshal %s: error %v, want it to contain %q", tc.in, err, tc.want)
		}
	}
}

func TestDurationYAML(t *testing.T) {
	var ns spec.Namespace
	if err := yaml.Unmarshal([]byte("name: default\nretention: 48h\nblockSize: 2h\n"), &ns); err != nil {
		t.Fatal(err)
	}
	if ns.Retention.D() != 48*time.Hour || ns.BlockSize.D() != 2*time.Hour {
		t.Fatalf("got retention %s blockSize %s", ns.Retention, ns.BlockSize)
	}
	b, err := yaml.Marshal(ns)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "retention: 48h0m0s\n") {
		t.Fatalf("marshalled:\n%s", b)
	}

	err = yaml.Unmarshal([]byte("retention: 2d\n"), &ns)
	if err == nil || !strings.Contains(err.Error(), `invalid duration "2d": use Go durations like 48h`) {
		t.Fatalf("2d: error %v", err)
	}
}

// The whole spec survives both encodings: JSON (what etcd stores), YAML via
// yaml.v2 (the Duration's own YAML methods) and YAML via sigs.k8s.io/yaml
// (what the CLI prints and reads; it goes through JSON).
func TestClusterRoundTrip(t *testing.T) {
	want := validCluster()
	want.Release.InsecureSkipChecksum = true
	codecs := []struct {
		name      string
		marshal   func(any) ([]byte, error)
		unmarshal func([]byte, any) error
	}{
		{"json", json.Marshal, json.Unmarshal},
		{"yaml.v2", yaml.Marshal, yaml.Unmarshal},
		{"sigs.k8s.io/yaml", sigsyaml.Marshal, func(b []byte, v any) error { return sigsyaml.Unmarshal(b, v) }},
	}
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			b, err := c.marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), "48h0m0s") {
				t.Fatalf("durations not written as strings:\n%s", b)
			}
			var got spec.Cluster
			if err := c.unmarshal(b, &got); err != nil {
				t.Fatalf("unmarshal: %v\n%s", err, b)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip changed the spec:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestValidateErrorsAreJoined(t *testing.T) {
	c := validCluster()
	c.M3.NumShards = 0
	c.M3.ReplicationFactor = 0
	err := c.Validate()
	if err == nil {
		t.Fatal("want an error")
	}
	var j interface{ Unwrap() []error }
	if !errors.As(err, &j) || len(j.Unwrap()) != 2 {
		t.Fatalf("want two joined errors, got %v", err)
	}
}
