package join_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/join"
)

// TestJoinAuthorizes: the join gives the joiner's etcd identity the role
// it joins in (voter, or client once the voters are full) before anything
// is issued; if that fails, the join is refused and no learner is added.
func TestJoinAuthorizes(t *testing.T) {
	c := newCluster(t)
	ctx := testCtx(t)
	var mu sync.Mutex
	got := map[string]join.Role{}
	var fail error
	roleOf := func(name string) join.Role {
		mu.Lock()
		defer mu.Unlock()
		return got[name]
	}
	setFail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		fail = err
	}
	h, err := join.Handler(join.ServerConfig{CA: c.ca, Tokens: c.tokens, Members: c.members, Now: c.clock.Now, MaxVoters: 3,
		Authorize: func(_ context.Context, name string, role join.Role) error {
			mu.Lock()
			defer mu.Unlock()
			if fail != nil {
				return fail
			}
			got[name] = role
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := join.ServerTLS(c.ca, []string{"127.0.0.1", "localhost"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := serveTLS(t, h, cfg, &c.calls)

	setFail(errors.New("etcd unavailable"))
	if _, err := join.Join(ctx, srv.URL, c.token(t, time.Hour).Encode(), voterReq("node-2", "127.0.0.2")); err == nil || !strings.Contains(err.Error(), "authorize node-2") {
		t.Fatalf("join whose authorization failed: %v, want refused", err)
	}
	if c.members.adds != 0 {
		t.Fatalf("a failed authorization added %d learners", c.members.adds)
	}
	setFail(nil)
	for _, n := range []struct{ name, ip string }{{"node-2", "127.0.0.2"}, {"node-3", "127.0.0.3"}, {"node-4", "127.0.0.4"}} {
		resp, err := join.Join(ctx, srv.URL, c.token(t, time.Hour).Encode(), voterReq(n.name, n.ip))
		if err != nil {
			t.Fatalf("join %s: %v", n.name, err)
		}
		if r := roleOf(n.name); r != resp.Role {
			t.Fatalf("%s joined as %s but was authorized as %q", n.name, resp.Role, r)
		}
		if resp.Role == join.RoleVoter {
			c.members.start(resp.MemberID, n.name, "https://"+n.ip+":2379")
		}
	}
	if roleOf("node-2") != join.RoleVoter || roleOf("node-4") != join.RoleClient {
		t.Fatalf("authorized roles: node-2 %q, node-4 %q", roleOf("node-2"), roleOf("node-4"))
	}
}
