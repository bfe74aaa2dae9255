package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Cluster is the desired state of the whole M3 cluster.
type Cluster struct {
	Release     Release   `json:"release" yaml:"release"`
	M3          M3        `json:"m3" yaml:"m3"`
	DBNode      Component `json:"dbnode" yaml:"dbnode"`
	Coordinator Component `json:"coordinator" yaml:"coordinator"`
}

// Release says where the M3 release tarball comes from.
type Release struct {
	Version              string `json:"version" yaml:"version"`
	URL                  string `json:"url" yaml:"url"`
	Checksum             string `json:"checksum" yaml:"checksum"`
	InsecureSkipChecksum bool   `json:"insecureSkipChecksum,omitempty" yaml:"insecureSkipChecksum,omitempty"`
}

// M3 is the M3 topology.
type M3 struct {
	Env               string      `json:"env" yaml:"env"`
	Zone              string      `json:"zone" yaml:"zone"`
	NumShards         int         `json:"numShards" yaml:"numShards"`
	ReplicationFactor int         `json:"replicationFactor" yaml:"replicationFactor"`
	IsolationGroup    string      `json:"isolationGroup" yaml:"isolationGroup"`
	Namespaces        []Namespace `json:"namespaces" yaml:"namespaces"`
}

// Namespace is one unaggregated M3 namespace.
type Namespace struct {
	Name         string   `json:"name" yaml:"name"`
	Retention    Duration `json:"retention" yaml:"retention"`
	BlockSize    Duration `json:"blockSize" yaml:"blockSize"`
	BufferPast   Duration `json:"bufferPast" yaml:"bufferPast"`
	BufferFuture Duration `json:"bufferFuture" yaml:"bufferFuture"`
	IndexEnabled bool     `json:"indexEnabled" yaml:"indexEnabled"`
}

// Component holds the settings of one M3 process that end up in its config
// or its container.
type Component struct {
	LogLevel string `json:"logLevel" yaml:"logLevel"`
	// Image, when set, runs the component from this image reference (like
	// quay.io/m3db/m3dbnode:v1.5.0) pulled through containerd, instead of
	// the release tarball's binary (image mode). The image must hold
	// /bin/<component>; m3sup passes the arguments.
	Image string `json:"image,omitempty" yaml:"image,omitempty"`
	// Config is deep-merged into the rendered M3 config (maps merge, other
	// values replace), for M3 settings m3sup does not model.
	Config map[string]any `json:"config,omitempty" yaml:"config,omitempty"`
}

// Control is a host's per-component operator intent: stopped by
// `m3sup stop`, restarted by `m3sup restart` (each bumps the generation).
type Control struct {
	Stopped           bool  `json:"stopped,omitempty"`
	RestartGeneration int64 `json:"restartGeneration,omitempty"`
}

// HostControls maps component name to its Control on one host.
type HostControls map[string]Control

// Duration is a time.Duration written as a Go duration string ("48h").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"48h\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: use Go durations like 48h", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: use Go durations like 48h", s)
	}
	*d = Duration(v)
	return nil
}

var (
	nameRE     = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)
	checksumRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	logLevels  = map[string]bool{"debug": true, "info": true, "warn": true, "error": true}

	// ImageRefRE matches a fully qualified image reference: a registry host
	// (a dotted name, localhost or an IP, with an optional port), a
	// lowercase repository path, and a tag and/or a sha256 digest.
	ImageRefRE = regexp.MustCompile(`^(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+|localhost|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?` +
		`(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+` +
		`(?:(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})(?:@sha256:[0-9a-f]{64})?|@sha256:[0-9a-f]{64})$`)
)

// Validate reports every invalid field, each prefixed by its path.
func (c Cluster) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if c.Release.Version == "" {
		bad("release.version", "must be set")
	}
	if c.Release.URL == "" {
		bad("release.url", "must be set")
	}
	switch {
	case c.Release.InsecureSkipChecksum:
	case c.Release.Checksum == "":
		bad("release.checksum", "must be set (sha256:<hex> or file:<url>); skipping needs insecureSkipChecksum")
	case strings.HasPrefix(c.Release.Checksum, "file:"):
	case !checksumRE.MatchString(c.Release.Checksum):
		bad("release.checksum", "must be sha256:<64 lowercase hex> or file:<url>, got %q", c.Release.Checksum)
	}
	if c.M3.Env == "" {
		bad("m3.env", "must be set")
	}
	if c.M3.Zone == "" {
		bad("m3.zone", "must be set")
	}
	if c.M3.NumShards < 1 || c.M3.NumShards > 4096 {
		bad("m3.numShards", "must be between 1 and 4096, got %d", c.M3.NumShards)
	}
	if c.M3.ReplicationFactor < 1 || c.M3.ReplicationFactor > 7 {
		bad("m3.replicationFactor", "must be between 1 and 7, got %d", c.M3.ReplicationFactor)
	}
	if c.M3.IsolationGroup == "" {
		bad("m3.isolationGroup", "must be set")
	}
	if len(c.M3.Namespaces) == 0 {
		bad("m3.namespaces", "at least one namespace is required")
	}
	seen := map[string]bool{}
	for i, ns := range c.M3.Namespaces {
		p := fmt.Sprintf("m3.namespaces[%d]", i)
		if !nameRE.MatchString(ns.Name) {
			bad(p+".name", "must match %s, got %q", nameRE, ns.Name)
		}
		if seen[ns.Name] {
			bad(p+".name", "duplicate namespace %q", ns.Name)
		}
		seen[ns.Name] = true
		if ns.Retention <= 0 {
			bad(p+".retention", "must be positive")
		}
		if ns.BlockSize <= 0 {
			bad(p+".blockSize", "must be positive")
		} else if ns.Retention > 0 && ns.Retention < ns.BlockSize {
			bad(p+".retention", "must be at least blockSize (%s)", ns.BlockSize)
		}
		if ns.BufferPast < 0 {
			bad(p+".bufferPast", "must not be negative")
		}
		if ns.BufferFuture < 0 {
			bad(p+".bufferFuture", "must not be negative")
		}
	}
	// A slice, not a map: the errors must come out in a stable order.
	for _, f := range []struct{ path, lvl string }{
		{"dbnode.logLevel", c.DBNode.LogLevel},
		{"coordinator.logLevel", c.Coordinator.LogLevel},
	} {
		if !logLevels[f.lvl] {
			bad(f.path, "must be one of debug, info, warn, error; got %q", f.lvl)
		}
	}
	for _, f := range []struct{ path, ref string }{
		{"dbnode.image", c.DBNode.Image},
		{"coordinator.image", c.Coordinator.Image},
	} {
		if f.ref != "" && !ImageRefRE.MatchString(f.ref) {
			bad(f.path, "must be a full image reference with a registry host and a tag or digest, like quay.io/m3db/m3dbnode:v1.5.0; got %q", f.ref)
		}
	}
	return errors.Join(errs...)
}
