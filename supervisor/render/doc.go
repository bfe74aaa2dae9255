// Package render turns this host's desired state into the components it
// runs: desired spec, host facts, the fetched release and the resolved
// images in; container specs, their hashes and the files they need out
// (Components). It is a pure function: it reads no etcd, no file and no
// clock, and writes nothing; the daemon fetches before (the release, the
// images) and materializes after (the directories and files of Output).
//
// The hash of a component decides adopt, keep or restart (see
// supervisor/agent), so whatever shapes a container goes into its Spec;
// what must not restart anything (which etcd voters there are now) is kept
// out of the hash on purpose, and the reason is written where it is.
//
// Import rule: the standard library, runtime (the contract),
// supervisor/agent, supervisor/config, supervisor/spec and supervisor/m3;
// never supervisor/store, cluster, member or runtime/containerd.
package render
