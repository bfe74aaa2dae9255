package importrules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/m3sup/m3sup"

// A rule constrains the imports of the packages its pkg pattern matches.
// Patterns are module-relative ("supervisor/store") or full import paths
// ("go.etcd.io/etcd/server/..."); a trailing "/..." also matches the path
// itself and everything beneath; "std" matches any standard-library
// package; "..." alone matches every package of the module.
type rule struct {
	pkg string
	// except lists packages pkg matches that the rule leaves out.
	except []string
	// only: every direct import (non-test code) matches one of these.
	only []string
	// never: no import of the package's non-test code, direct or
	// transitive, matches any of these.
	never []string
	// neverDirect: like never, for direct imports only (a package may reach
	// a heavy dependency through the one package that owns it).
	neverDirect []string
	// tests: never also holds for the package's test imports (direct).
	tests bool
	// why: where the rule is written down.
	why string
}

// rules is m3sup's import graph as its package comments state it. Keep a
// rule to what the package's doc comment says; edit both together.
var rules = []rule{
	// The contract and the leaves.
	{pkg: "runtime", only: []string{"std"},
		why: "runtime's doc: it imports only the standard library"},
	{pkg: "runtime/...", never: []string{"supervisor/..."},
		why: "STYLE.md: runtime never imports supervisor"},
	{pkg: "bundle/...", never: []string{"supervisor/..."},
		why: "STYLE.md: bundle never imports supervisor"},
	{pkg: "supervisor/agent", never: []string{"runtime/containerd", "github.com/containerd/..."},
		why: "STYLE.md: the agent drives containers through the runtime contract; containerd stays behind it"},
	{pkg: "supervisor/restart", only: []string{"std"},
		why: "supervisor/restart: pure, standard library only"},
	{pkg: "supervisor/logrotate", only: []string{"std", "go.uber.org/zap"},
		why: "supervisor/logrotate's doc: the standard library and zap only"},
	{pkg: "supervisor/readiness", only: []string{"std", "supervisor/agent"},
		why: "supervisor/readiness's doc: a pure verdict over the agent's component status"},
	{pkg: "supervisor/spec", only: []string{"std", "sigs.k8s.io/yaml"},
		why: "supervisor/spec: the desired state's types and validation, nothing from m3sup"},
	{pkg: "supervisor/config", only: []string{"std", "go.uber.org/config", "gopkg.in/yaml.v2", "internal/regularfile"},
		why: "supervisor/config's doc: standard library, go.uber.org/config, gopkg.in/yaml.v2 and internal/regularfile only; nothing else from m3sup"},
	{pkg: "supervisor/pki", only: []string{"std", "internal/atomicfile"},
		why: "supervisor/pki's doc: the standard library and internal/atomicfile only"},
	{pkg: "supervisor/disk", only: []string{"std", "golang.org/x/sys/unix", "go.uber.org/zap"},
		why: "supervisor/disk's doc: the standard library, golang.org/x/sys/unix and zap only"},
	{pkg: "supervisor/m3/cpucore", only: []string{"std", "golang.org/x/sys/unix"},
		why: "supervisor/m3/cpucore's doc: standard library and golang.org/x/sys/unix only"},
	{pkg: "supervisor/m3", only: []string{"std", "go.yaml.in/yaml/v2"}, never: []string{"github.com/m3db/..."},
		why: "supervisor/m3's doc: standard library plus one YAML encoder; never github.com/m3db/m3"},

	{pkg: "supervisor/render",
		only:  []string{"std", "runtime", "supervisor/agent", "supervisor/config", "supervisor/spec", "supervisor/m3"},
		never: []string{"supervisor/store", "supervisor/cluster", "supervisor/member", "runtime/containerd", "go.etcd.io/..."},
		why:   "supervisor/render's doc: a pure function over the standard library, runtime, agent, config, spec and m3; never store, cluster, member or containerd"},

	// Multi-host.
	{pkg: "supervisor/cluster",
		only: []string{"std", "go.uber.org/zap", "github.com/oklog/run", "go.etcd.io/etcd/client/v3", "go.etcd.io/etcd/client/v3/concurrency",
			"supervisor/m3", "supervisor/api", "supervisor/spec", "supervisor/agent", "supervisor/pki", "internal/atomicfile"},
		never: []string{"supervisor/store", "supervisor/member", "runtime/containerd"},
		why:   "supervisor/cluster's doc: standard library, zap, the etcd client, m3, api, atomicfile and the leaves spec, agent, pki; never store"},
	{pkg: "supervisor/join", never: []string{"supervisor/store", "supervisor/cluster", "supervisor/api", "go.etcd.io/etcd/server/..."},
		why: "supervisor/join's doc: pki, etcd's client and zap; never the embedded etcd server (store), cluster or api"},
	{pkg: "supervisor/member", neverDirect: []string{"supervisor/api", "supervisor/agent", "runtime/..."}, never: []string{"runtime/containerd"},
		why: "supervisor/member's doc: store, pki, join, cluster and m3; never api, agent or the runtime"},
	{pkg: "supervisor/store", never: []string{"supervisor/cluster", "supervisor/join", "supervisor/member", "supervisor/m3", "supervisor/pki", "supervisor/api"},
		why: "supervisor/store's doc: the etcd server and client, zap and spec; no other m3sup package"},
	{pkg: "supervisor/backup", never: []string{"os/exec", "runtime/...", "supervisor/agent"},
		why: "supervisor/backup's doc: etcd, store and spec; nothing that runs processes"},

	// The daemon is wiring: only the command imports it.
	{pkg: "...", except: []string{"supervisor", "cmd/m3sup"}, never: []string{"supervisor"}, tests: true,
		why: "issue 11: no package imports the root supervisor but cmd/m3sup"},
	// Test harnesses stay out of the binary.
	{pkg: "...", except: []string{"internal/..."}, never: []string{"internal/e2etest", "internal/etcdtest", "internal/registrytest"},
		why: "internal/e2etest, etcdtest, registrytest: imported only by tests"},
	{pkg: "internal/atomicfile", only: []string{"std"},
		why: "internal/atomicfile's doc: standard library only"},
	{pkg: "internal/regularfile", only: []string{"std"},
		why: "internal/regularfile's doc: standard library only"},

	// Each heavy dependency lives in one package.
	{pkg: "...", except: []string{"runtime/containerd"}, neverDirect: []string{"github.com/containerd/..."},
		why: "STYLE.md: runtime/containerd is the only importer of containerd"},
	{pkg: "...", except: []string{"bundle"}, neverDirect: []string{"github.com/hashicorp/go-getter/..."},
		why: "STYLE.md: bundle is the only importer of go-getter"},
	{pkg: "...", except: []string{"supervisor/store", "supervisor/backup"}, neverDirect: []string{"go.etcd.io/etcd/server/...", "go.etcd.io/etcd/etcdutl/..."},
		why: "the embedded etcd server lives in supervisor/store (and backup's snapshot restore)"},
}

// pkgInfo is what `go list -json` says of one package.
type pkgInfo struct {
	ImportPath   string
	Doc          string
	Imports      []string
	Deps         []string
	TestImports  []string
	XTestImports []string
}

// listPackages runs `go list -json ./...` at the module root.
func listPackages(t *testing.T) []pkgInfo {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("go list -json ./...: %v\n%s", err, stderr.String())
	}
	var pkgs []pkgInfo
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkgInfo
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

// moduleDirs are the module's top-level directories: a pattern whose first
// element is one of them is module-relative ("runtime" is m3sup's, not
// Go's). Add a new top-level directory here.
var moduleDirs = []string{"bench", "bundle", "cmd", "e2e", "internal", "runtime", "supervisor"}

// full turns a module-relative pattern into an import-path pattern.
func full(pattern string) string {
	first := strings.SplitN(pattern, "/", 2)[0]
	for _, d := range moduleDirs {
		if first == d {
			return module + "/" + pattern
		}
	}
	return pattern
}

// isStd reports whether path looks like a standard-library path: no dot in
// its first element.
func isStd(path string) bool {
	return !strings.Contains(strings.SplitN(path, "/", 2)[0], ".")
}

// match reports whether import path p matches pattern (module-relative
// patterns resolved with full).
func match(pattern, p string) bool {
	pattern = full(pattern)
	switch {
	case pattern == "...":
		return strings.HasPrefix(p, module+"/") || p == module
	case pattern == "std":
		return isStd(p)
	case strings.HasSuffix(pattern, "/..."):
		base := strings.TrimSuffix(pattern, "/...")
		return p == base || strings.HasPrefix(p, base+"/")
	}
	return p == pattern
}

func matchAny(patterns []string, p string) bool {
	for _, pat := range patterns {
		if match(pat, p) {
			return true
		}
	}
	return false
}

// check returns one line per broken rule and offending import, naming the
// package, the import and the rule.
func check(pkgs []pkgInfo, rules []rule) []string {
	var bad []string
	for _, p := range pkgs {
		for _, r := range rules {
			if !match(r.pkg, p.ImportPath) || matchAny(r.except, p.ImportPath) {
				continue
			}
			report := func(kind, imp string) {
				bad = append(bad, fmt.Sprintf("%s %s %s (%s)", p.ImportPath, kind, imp, r.why))
			}
			if r.only != nil {
				for _, imp := range p.Imports {
					if !matchAny(r.only, imp) {
						report("imports", imp+", which its rule does not allow")
					}
				}
			}
			direct := map[string]bool{}
			for _, imp := range p.Imports {
				direct[imp] = true
				if matchAny(r.neverDirect, imp) || matchAny(r.never, imp) {
					report("imports", imp)
				}
			}
			for _, dep := range p.Deps {
				if !direct[dep] && matchAny(r.never, dep) {
					report("depends (indirectly) on", dep)
				}
			}
			if r.tests {
				for _, imp := range append(append([]string(nil), p.TestImports...), p.XTestImports...) {
					if imp != p.ImportPath && matchAny(r.never, imp) {
						report("imports in its tests", imp)
					}
				}
			}
		}
	}
	return bad
}

// TestImportRules checks the module's real import graph against rules.
func TestImportRules(t *testing.T) {
	pkgs := listPackages(t)
	for _, line := range check(pkgs, rules) {
		t.Error(line)
	}
	// A rule whose package is gone checks nothing: say so.
	for _, r := range rules {
		found := false
		for _, p := range pkgs {
			if match(r.pkg, p.ImportPath) && !matchAny(r.except, p.ImportPath) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("rule for %s matches no package (%s); update the table", r.pkg, r.why)
		}
	}
}

// TestPackageDocs: every package says its job in a doc comment.
func TestPackageDocs(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc comment (say its job, and its import rule, in a doc.go)", p.ImportPath)
		}
	}
}

// TestCheck runs the checker on a made-up graph, so that a checker which
// finds nothing cannot pass silently.
func TestCheck(t *testing.T) {
	m := func(s string) string { return module + "/" + s }
	pkgs := []pkgInfo{
		{ImportPath: m("runtime"), Imports: []string{"errors", "go.uber.org/zap"}, Deps: []string{"errors", "go.uber.org/zap"}},
		{ImportPath: m("bundle"), Imports: []string{"fmt", m("internal/x")}, Deps: []string{"fmt", m("internal/x"), m("supervisor/spec")}},
		{ImportPath: m("internal/x"), Imports: []string{m("supervisor/spec")}, Deps: []string{m("supervisor/spec")}},
		{ImportPath: m("supervisor/spec"), Imports: []string{"fmt"}},
		{ImportPath: m("supervisor"), Imports: []string{m("supervisor/spec")}},
		{ImportPath: m("cmd/m3sup"), Imports: []string{m("supervisor")}},
		{ImportPath: m("e2e"), TestImports: []string{m("supervisor"), "github.com/containerd/containerd/v2/client"}},
		{ImportPath: m("runtime/containerd"), Imports: []string{"github.com/containerd/containerd/v2/client"}},
	}
	table := []rule{
		{pkg: "runtime", only: []string{"std"}, why: "std only"},
		{pkg: "bundle/...", never: []string{"supervisor/..."}, why: "no supervisor"},
		{pkg: "...", except: []string{"supervisor", "cmd/m3sup"}, never: []string{"supervisor"}, tests: true, why: "no daemon"},
		{pkg: "...", except: []string{"internal/..."}, never: []string{"internal/..."}, why: "tests only"},
		{pkg: "...", except: []string{"runtime/containerd"}, neverDirect: []string{"github.com/containerd/..."}, why: "one importer"},
	}
	got := check(pkgs, table)
	want := []string{
		m("runtime") + " imports go.uber.org/zap, which its rule does not allow (std only)",
		m("bundle") + " depends (indirectly) on " + m("supervisor/spec") + " (no supervisor)",
		m("bundle") + " imports " + m("internal/x") + " (tests only)",
		m("e2e") + " imports in its tests " + m("supervisor") + " (no daemon)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("check found:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, tc := range []struct {
		pattern, path string
		want          bool
	}{
		{"std", "os/exec", true},
		{"std", "golang.org/x/sys/unix", false},
		{"supervisor", m("supervisor"), true},
		{"supervisor", m("supervisor/store"), false},
		{"supervisor/...", m("supervisor"), true},
		{"supervisor/...", m("supervisor/store"), true},
		{"supervisor/...", m("supervisorx"), false},
		{"runtime/...", "runtime/debug", false},
		{"runtime", "runtime", false},
		{"os/exec", "os/exec", true},
		{"go.etcd.io/etcd/server/...", "go.etcd.io/etcd/server/v3/embed", true},
		{"...", m("e2e"), true},
		{"...", "fmt", false},
	} {
		if got := match(tc.pattern, tc.path); got != tc.want {
			t.Errorf("match(%q, %q) = %v, want %v", tc.pattern, tc.path, got, tc.want)
		}
	}
}
