package runtime

import (
	"errors"
	"time"
)

// Labels m3sup puts on every container it creates. A container carrying
// LabelOwner=OwnerValue belongs to m3sup; LabelComponent names the component
// and LabelSpecHash the hash of the Spec it was created from, so a restarted
// m3sup can decide whether to adopt or replace it.
const (
	LabelOwner     = "io.m3sup.owner"
	OwnerValue     = "m3sup"
	LabelComponent = "io.m3sup.component"
	LabelSpecHash  = "io.m3sup.spec-hash"
	LabelVersion   = "io.m3sup.version"
)

// ErrNotFound is returned (wrapped) when a container or task does not exist.
var ErrNotFound = errors.New("not found")

// Mount is a bind mount from the host into the container.
type Mount struct {
	Source      string // host path
	Destination string // path inside the container
	ReadOnly    bool
}

// Spec describes one container. Containers always use the host network
// namespace (M3 listens on host addresses).
type Spec struct {
	// ID is the containerd container id, unique within the namespace.
	ID string
	// RootFS is a host directory used as the container's root filesystem
	// (release-binary mode). It must be writable: runc creates mountpoints in it.
	RootFS string
	// Image, when set, is an image reference already known to the runtime
	// (pulled or imported); the container runs from a fresh writable
	// snapshot of it instead of RootFS (image mode). Exactly one of RootFS
	// and Image is set.
	Image string
	// Args is the process argv; Args[0] is a path inside the container.
	Args []string
	// Env is KEY=VALUE pairs added to the process environment.
	Env []string
	// Mounts are bind mounts, applied in order.
	Mounts []Mount
	// NoFile is RLIMIT_NOFILE (soft and hard). Zero keeps the runtime default.
	NoFile uint64
	// LogPath is a host file receiving the process's stdout and stderr.
	LogPath string
	// Labels are stored on the container (see the Label* constants).
	Labels map[string]string
}

// State is a task's observed state.
type State string

const (
	StateRunning State = "running"
	StateCreated State = "created"
	StateStopped State = "stopped"
	StatePaused  State = "paused"
	StateUnknown State = "unknown"
	// StateNoTask means the container exists but has no task.
	StateNoTask State = "no-task"
)

// Status is what the runtime observes of one container.
type Status struct {
	ID       string            `json:"id"`
	Labels   map[string]string `json:"labels,omitempty"`
	State    State             `json:"state"`
	PID      uint32            `json:"pid,omitempty"`
	ExitCode uint32            `json:"exitCode,omitempty"`
	ExitedAt time.Time         `json:"exitedAt,omitzero"`
}

// Exit reports how a task ended.
type Exit struct {
	Code uint32
	At   time.Time
	// Err is set when the exit could not be observed (for example the
	// runtime connection was lost); Code and At are then meaningless.
	Err error
}
