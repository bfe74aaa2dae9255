package member

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/internal/etcdtest"
	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/config"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/pki"
)

// TestJoinServerWiring runs the daemon's own join endpoint (JoinServer:
// the http.Server with its timeouts, etcd membership, token store, name
// checks) over a real etcd: a plain token makes a client-only host though
// voter seats are free; the token is then used up; a name a running host
// registered, or one a host published its state under, is refused; a
// token holder cannot get a certificate for another address.
func TestJoinServerWiring(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := etcdtest.Start(t, "host1")
	ca, err := pki.NewCA("m3sup-test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	port := etcdtest.FreePorts(t, "127.0.0.1", 1)[0]
	o := Options{NodeName: "host1", Advertise: "127.0.0.1", MultiHost: true,
		JoinListen: fmt.Sprintf("127.0.0.1:%d", port), MaxVoters: config.Default().Cluster.MaxVoters, Logger: zap.NewNop()}
	m := &Member{o: o, etcd: e, ca: ca}
	execute, interrupt, err := m.JoinServer()
	if err != nil || execute == nil {
		t.Fatalf("JoinServer: %v", err)
	}
	var s join.TokenService
	s.Enable(e.Client(), m.CA())
	done := make(chan error, 1)
	go func() { done <- execute() }()
	t.Cleanup(func() {
		interrupt(nil)
		if err := <-done; err != nil {
			t.Errorf("join server: %v", err)
		}
	})
	url := fmt.Sprintf("https://127.0.0.1:%d", port)

	plain, _, err := s.CreateToken(ctx, join.TokenOptions{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	req := func(name, ip string) join.Request {
		return join.Request{NodeName: name, Advertise: []string{ip}, WantVoter: true,
			PeerURL: "https://" + ip + ":2380", ClientURL: "https://" + ip + ":2379"}
	}
	// JoinServer listens before it returns: no wait for execute.
	r, err := join.Join(ctx, url, plain, req("host2", "127.0.0.3"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Role != join.RoleClient || r.CAKey != "" || r.PeerCert != "" {
		t.Fatalf("plain token with free voter seats: role %s, CA key given %t", r.Role, r.CAKey != "")
	}
	if _, err := join.Join(ctx, url, plain, req("host3", "127.0.0.4")); !errors.Is(err, join.ErrRefused) {
		t.Fatalf("single-use token used twice: %v", err)
	}

	voter, _, err := s.CreateToken(ctx, join.TokenOptions{TTL: time.Hour, Uses: 5, Voter: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Register(ctx, e.Client(), cluster.Host{Name: "host7", Roles: []cluster.Role{cluster.RoleCoordinator}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := cluster.PublishHostState(ctx, e.Client(), cluster.HostState{Host: "host8"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		req  join.Request
		want string
	}{
		{req("host1", "127.0.0.5"), `nodeName "host1": an etcd member has that name`},
		{req("host7", "127.0.0.5"), `nodeName "host7": a registered host has that name`},
		{req("host8", "127.0.0.5"), `nodeName "host8": a registered host has that name`},
		{join.Request{NodeName: "host9", Advertise: []string{"8.8.8.8"}}, "advertise 8.8.8.8: not the address this join comes from"},
	} {
		if _, err := join.Join(ctx, url, voter, tt.req); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("join as %s: %v, want %q", tt.req.NodeName, err, tt.want)
		}
	}
	list, err := s.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range list {
		if i.Voter && i.Used != 0 {
			t.Errorf("refused joins spent the voter token: %+v", i)
		}
	}
}
