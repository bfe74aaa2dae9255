package supervisor

import (
	"slices"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/spec"
	"github.com/m3sup/m3sup/supervisor/store"
)

// stateErrors are the values in etcd this host cannot use now (a cluster
// spec that does not validate, controls that do not decode): each is
// logged once when it appears and once when it is gone, and `m3sup status`
// lists them until then. Reconciling goes on with the last good values.
type stateErrors struct {
	cur []api.StateError
	// inForce is the cluster spec of the latest desired state this host
	// acts on (the last good one while etcd holds a bad one).
	inForce spec.Cluster
}

// noteChange records a desired state this host acts on: its spec, and the
// values it refused (each logged once).
func (h *hostStatus) noteChange(ch store.Change) {
	h.mu.Lock()
	h.stateErrs.inForce = ch.Cluster
	h.mu.Unlock()
	h.noteStateErrors(ch.Errors)
}

// runningSpec is the cluster spec this host acts on.
func (h *hostStatus) runningSpec() spec.Cluster {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stateErrs.inForce
}

// noteStateErrors records the bad values of the latest desired state.
func (h *hostStatus) noteStateErrors(errs []*store.ValueError) {
	next := make([]api.StateError, 0, len(errs))
	for _, e := range errs {
		next = append(next, api.StateError{Key: e.Key, Revision: e.Revision, Error: e.Err.Error()})
	}
	h.mu.Lock()
	prev := h.stateErrs.cur
	h.stateErrs.cur = next
	h.mu.Unlock()
	for _, e := range next {
		if !slices.Contains(prev, e) {
			h.log.Error("refusing a value in etcd; keeping the last good one (defaults if none)",
				zap.String("key", e.Key), zap.Int64("revision", e.Revision), zap.String("error", e.Error))
		}
	}
	for _, e := range prev {
		if !slices.ContainsFunc(next, func(n api.StateError) bool { return n.Key == e.Key }) {
			h.log.Info("the value in etcd is usable again", zap.String("key", e.Key))
		}
	}
}
