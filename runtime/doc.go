// Package runtime is the contract between m3sup's supervisor and whatever runs
// its containers: the container Spec m3sup needs, the Status it observes and
// the Exit it waits for. It imports only the standard library; the containerd
// implementation lives in runtime/containerd.
package runtime
