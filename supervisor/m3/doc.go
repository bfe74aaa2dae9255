// Package m3 knows M3 v1.5.0: it renders the m3dbnode and m3coordinator
// YAML configs, talks to the coordinator's admin and data API, and drives a
// cluster idempotently to a desired placement and set of namespaces.
//
// Import rule: standard library plus one YAML encoder; never
// github.com/m3db/m3 (its go.mod replace lines and dependency tree stay out
// of our module). Everything here is synchronous; callers add concurrency.
package m3
