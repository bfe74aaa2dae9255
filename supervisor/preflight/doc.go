// Package preflight checks that a host can run M3 well — kernel limits,
// containerd and runc, cgroups, memory, disk, ports, root — and fixes the
// kernel settings it can. Checks only report; each is independent, so one
// unreadable file never hides the others.
package preflight
