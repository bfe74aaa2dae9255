// Package importrules checks m3sup's import graph against the rules its
// package comments state, in the spirit of tailscale's deps tests: the
// runtime contract uses the standard library only, bundle and runtime never
// import supervisor, no package but cmd/m3sup imports the daemon
// (supervisor), each heavy dependency stays in its one package, and every
// package says its job in a doc comment. The rules are the table in
// rules_test.go; a package whose doc comment changes its import rule changes
// its line there too. It has no code of its own, only the test.
package importrules
