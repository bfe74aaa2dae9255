// Package agent keeps this host's M3 components running: it adopts or
// replaces containers left by an earlier m3sup, starts what is missing,
// observes exits through the runtime's Wait, restarts crashed components
// with backoff, and rolls a component whose desired spec changed (a planned
// restart, gated for components that must not restart while the cluster
// cannot afford it). It decides; the runtime does.
package agent
