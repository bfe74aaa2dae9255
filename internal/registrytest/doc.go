// Package registrytest runs a real OCI registry (Debian's docker-registry,
// the distribution v2 registry) on loopback for tests, and builds and pushes
// small images made of host files with go-containerregistry. It is imported
// only by tests.
package registrytest
