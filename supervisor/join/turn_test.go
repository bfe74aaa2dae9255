package join_test

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/join"
)

// TestJoinAnotherHostJoining: while one voter join's learner waits to start
// and be promoted, a second voter join is answered 503 "another host is
// joining" (transient for the Joiner) before its token is used or etcd is
// asked; a client-only join needs no learner and gets in meanwhile. The
// first joiner asking again (its answer lost) gets its learner back
// without using the token twice. Once the learner is promoted, the second
// voter gets its seat.
func TestJoinAnotherHostJoining(t *testing.T) {
	c := newCluster(t)
	ctx := testCtx(t)
	tok := c.token(t, time.Hour)
	used := func() int {
		t.Helper()
		infos, err := c.tokens.List(ctx)
		if err != nil || len(infos) != 1 {
			t.Fatalf("tokens %v, %v", infos, err)
		}
		return infos[0].Used
	}

	r2, err := join.Join(ctx, c.srv.URL, tok.Encode(), voterReq("node-2", "127.0.0.2"))
	if err != nil || r2.Role != join.RoleVoter {
		t.Fatalf("node-2: %v %v", r2.Role, err)
	}
	_, err = join.Join(ctx, c.srv.URL, tok.Encode(), voterReq("node-3", "127.0.0.3"))
	var se *join.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable || !strings.Contains(se.Message, "another host is joining") {
		t.Fatalf("node-3 while node-2's learner waits: %v", err)
	}
	if r := join.Classify(err); !r.Transient || r.Reason != "another host is joining" {
		t.Errorf("Classify: %+v", r)
	}
	if c.members.adds != 1 || used() != 1 {
		t.Errorf("the refused join: %d learners added, token used %d times; want 1 and 1", c.members.adds, used())
	}

	client := join.Request{NodeName: "node-4", Advertise: []string{"node-4.example"}}
	if r, err := join.Join(ctx, c.srv.URL, tok.Encode(), client); err != nil || r.Role != join.RoleClient {
		t.Fatalf("client-only join while a learner waits: %v %v", r.Role, err)
	}

	again, err := join.Join(ctx, c.srv.URL, tok.Encode(), voterReq("node-2", "127.0.0.2"))
	if err != nil || again.MemberID != r2.MemberID || c.members.adds != 1 {
		t.Fatalf("node-2 again: member %d (want %d), %d adds, %v", again.MemberID, r2.MemberID, c.members.adds, err)
	}
	if n := used(); n != 2 {
		t.Errorf("token used %d times after node-2 asked again; want 2 (node-2, node-4)", n)
	}

	c.members.start(r2.MemberID, "node-2", "https://127.0.0.2:2379")
	r3, err := join.Join(ctx, c.srv.URL, tok.Encode(), voterReq("node-3", "127.0.0.3"))
	if err != nil || r3.Role != join.RoleVoter || c.members.adds != 2 {
		t.Fatalf("node-3 after node-2's promotion: %v, %d adds, %v", r3.Role, c.members.adds, err)
	}
}

// TestJoinWaitsForItsTurnServerSide: joins through one endpoint queue for
// their turn; one whose time runs out in the queue is answered 503
// "another host is joining" (transient) having changed nothing, and once
// the turn is free the next join gets in.
func TestJoinWaitsForItsTurnServerSide(t *testing.T) {
	c := newCluster(t)
	ctx := testCtx(t)
	h, err := join.Handler(join.ServerConfig{CA: c.ca, Tokens: c.tokens, Members: c.members, Now: c.clock.Now,
		LookupHost: fakeDNS, JoinTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := join.ServerTLS(c.ca, []string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	srv := serveTLS(t, h, cfg, &calls)
	tok := c.token(t, time.Hour)
	client := func(name, ip string) join.Request { return join.Request{NodeName: name, Advertise: []string{ip}} }

	release := make(chan struct{})
	c.members.mu.Lock()
	c.members.hold, c.members.entered = release, make(chan struct{}, 1)
	c.members.mu.Unlock()
	first := make(chan error, 1)
	go func() {
		_, err := join.Join(ctx, srv.URL, tok.Encode(), client("node-2", "127.0.0.2"))
		first <- err
	}()
	<-c.members.entered // node-2 holds the turn
	_, err = join.Join(ctx, srv.URL, tok.Encode(), client("node-3", "127.0.0.3"))
	var se *join.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable || !strings.Contains(se.Message, "waiting for its turn") {
		t.Fatalf("queued join whose time ran out: %v", err)
	}
	if r := join.Classify(err); !r.Transient || r.Reason != "another host is joining" {
		t.Errorf("Classify: %+v", r)
	}
	close(release)
	firstErr := <-first // node-2's own time ran out while held: an error, or in
	if _, err := join.Join(ctx, srv.URL, tok.Encode(), client("node-4", "127.0.0.4")); err != nil {
		t.Fatalf("the next join once the turn is free: %v", err)
	}
	want := 1
	if firstErr == nil {
		want = 2
	}
	infos, err := c.tokens.List(ctx)
	if err != nil || len(infos) != 1 || infos[0].Used != want || slices.Contains(infos[0].UsedBy, "node-3") {
		t.Fatalf("token %+v, %v; want %d uses, none by node-3", infos, err, want)
	}
}
