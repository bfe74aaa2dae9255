package api_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/api"
)

// fakeRemover is a HostRemover with answers the test sets.
type fakeRemover struct {
	removeErr error
	asked     chan string
	done      chan error
}

func (f *fakeRemover) RemoveHost(_ context.Context, name string) (api.RemoveHostResult, error) {
	f.asked <- name
	if f.removeErr != nil {
		return api.RemoveHostResult{}, f.removeErr
	}
	return api.RemoveHostResult{Node: name, EtcdRole: "voter", EtcdMemberRemoved: true, InPlacement: true, State: api.RemoveStateRemoving}, nil
}

func (f *fakeRemover) RemoveHostDone(ctx context.Context, _ string) error {
	select {
	case err := <-f.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestRemoveHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := &fakeRemover{asked: make(chan string, 10), done: make(chan error, 1),
		removeErr: api.Errorf(api.ErrConflict, "cannot remove host2: host2 is running (registered in etcd); run `m3sup leave` on it (nothing changed)")}
	c := api.NewClient(serve(t, api.Handlers{HostRemover: f}))

	if _, err := c.RemoveHost(ctx, "host2", true); !errors.Is(err, api.ErrConflict) || err.Error() != "cannot remove host2: host2 is running (registered in etcd); run `m3sup leave` on it (nothing changed)" {
		t.Fatalf("refused remove-host: %v, want the conflict with the daemon's reason", err)
	}
	if got := <-f.asked; got != "host2" {
		t.Fatalf("daemon asked to remove %q", got)
	}

	f.removeErr = nil
	res, err := c.RemoveHost(ctx, "host4", false)
	if err != nil || res.State != api.RemoveStateRemoving || res.Node != "host4" || !res.EtcdMemberRemoved {
		t.Fatalf("remove-host without wait: %+v, %v", res, err)
	}
	<-f.asked

	got := make(chan api.RemoveHostResult, 1)
	go func() {
		res, err := c.RemoveHost(ctx, "host4", true)
		if err != nil {
			t.Errorf("remove-host with wait: %v", err)
		}
		got <- res
	}()
	<-f.asked
	select {
	case res := <-got:
		t.Fatalf("remove-host with wait answered %+v before the removal finished", res)
	case <-time.After(200 * time.Millisecond):
	}
	f.done <- nil
	if res := <-got; res.State != api.RemoveStateRemoved {
		t.Fatalf("remove-host with wait: state %q, want %q", res.State, api.RemoveStateRemoved)
	}
}
