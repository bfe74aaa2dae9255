package api_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/api"
)

// fakeLeaver is a Leaver with answers the test sets.
type fakeLeaver struct {
	leaveErr error
	done     chan error
}

func (f *fakeLeaver) Leave(context.Context) (api.LeaveResult, error) {
	if f.leaveErr != nil {
		return api.LeaveResult{}, f.leaveErr
	}
	return api.LeaveResult{Node: "h4", EtcdRole: "client", InPlacement: true, State: api.LeaveStateLeaving}, nil
}

func (f *fakeLeaver) LeaveDone(ctx context.Context) error {
	select {
	case err := <-f.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestLeave(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Refused: the daemon's reason, as a conflict, nothing else.
	f := &fakeLeaver{leaveErr: api.Errorf(api.ErrConflict, "cannot leave: removing h4 would leave 2 instance(s) (nothing changed)"), done: make(chan error, 1)}
	c := api.NewClient(serve(t, api.Handlers{Leaver: f}))
	if _, err := c.Leave(ctx, true); !errors.Is(err, api.ErrConflict) || err.Error() != "cannot leave: removing h4 would leave 2 instance(s) (nothing changed)" {
		t.Fatalf("refused leave: %v, want the conflict with the daemon's reason", err)
	}

	// Accepted without waiting: leaving.
	f.leaveErr = nil
	res, err := c.Leave(ctx, false)
	if err != nil || res.State != api.LeaveStateLeaving || res.Node != "h4" || res.EtcdRole != "client" || !res.InPlacement {
		t.Fatalf("leave without wait: %+v, %v", res, err)
	}

	// Waiting: answers once the leave finished.
	got := make(chan api.LeaveResult, 1)
	go func() {
		res, err := c.Leave(ctx, true)
		if err != nil {
			t.Errorf("leave with wait: %v", err)
		}
		got <- res
	}()
	select {
	case res := <-got:
		t.Fatalf("leave with wait answered %+v before the leave finished", res)
	case <-time.After(200 * time.Millisecond):
	}
	f.done <- nil
	if res := <-got; res.State != api.LeaveStateLeft {
		t.Fatalf("leave with wait: state %q, want %q", res.State, api.LeaveStateLeft)
	}

	// A leave that fails while waited for reports the failure.
	f.done <- errors.New("remove etcd member: quorum at risk")
	if _, err := c.Leave(ctx, true); err == nil || !strings.Contains(err.Error(), "quorum at risk") {
		t.Fatalf("failed leave: %v, want the failure", err)
	}
}
