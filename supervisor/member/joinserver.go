package member

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/cluster"
	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/store"
)

// JoinServer returns the join endpoint as an actor (execute, interrupt)
// on a host that holds the CA and has Options.JoinListen (the first host or
// a voter that joined it), or nils. It listens before it returns, so the
// endpoint serves as soon as etcd does.
func (m *Member) JoinServer() (execute func() error, interrupt func(error), err error) {
	o, ca := m.o, m.ca
	if o.JoinListen == "" {
		return nil, nil, nil
	}
	if ca == nil {
		o.Logger.Warn("cluster.joinListen is set but this host does not hold the cluster CA (an etcd client-only host, or a voter that joined before voters received it): not serving joins")
		return nil, nil, nil
	}
	cli := m.etcd.Client()
	h, err := join.Handler(join.ServerConfig{CA: ca, Tokens: join.NewTokens(cli, ca), Members: membership{cli},
		MaxVoters: o.MaxVoters, CertTTL: o.CertTTL, Logger: o.Logger.Named("join"),
		Readmit: func(ctx context.Context, name string) (bool, error) {
			return cluster.ClearRemoved(ctx, cli, name)
		},
		NameTaken: func(ctx context.Context, name string) (bool, error) {
			return hostNameTaken(ctx, cli, name)
		},
		Renewable: func(ctx context.Context, name string) error {
			return renewable(ctx, cli, name)
		},
		Authorize: func(ctx context.Context, name string, role join.Role) error {
			if role != join.RoleVoter {
				return store.SetUserRole(ctx, cli, pki.NodeCN(name), store.RoleClientHost)
			}
			// A voter that receives the CA key issues its M3 its own
			// certificate; one without uses its host's.
			if err := store.SetUserRole(ctx, cli, pki.M3CN(name), store.RoleM3); err != nil {
				return err
			}
			return store.SetUserRole(ctx, cli, pki.NodeCN(name), store.RoleRoot)
		}})
	if err != nil {
		return nil, nil, err
	}
	tlsCfg, err := m.issueJoinCert()
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", o.JoinListen)
	if err != nil {
		return nil, nil, fmt.Errorf("join endpoint: %w", err)
	}
	srv := join.NewHTTPServer(h, tlsCfg)
	o.Logger.Info("serving the join endpoint", zap.String("listen", "https://"+ln.Addr().String()))
	return func() error {
			err := srv.Serve(tls.NewListener(ln, tlsCfg))
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("join endpoint: %w", err)
		}, func(error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		}, nil
}

// issueJoinCert issues the join endpoint's certificate afresh into
// m.joinCert and returns the endpoint's TLS config, which serves whatever
// m.joinCert holds at each handshake (RenewCerts swaps it).
func (m *Member) issueJoinCert() (*tls.Config, error) {
	cfg, err := join.ServerTLS(m.ca, []string{m.o.Advertise, m.o.NodeName}, time.Now(), m.o.CertTTL)
	if err != nil {
		return nil, err
	}
	kp := cfg.Certificates[0]
	m.joinCert.Store(&kp)
	cfg.Certificates = nil
	cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return m.joinCert.Load(), nil }
	return cfg, nil
}

// renewable refuses to renew the client certificate of a host that was
// removed from the cluster, or that the cluster does not know (it left,
// or never ran): its still-valid certificate must not outlive it.
func renewable(ctx context.Context, cli *clientv3.Client, name string) error {
	if rem, removed, err := cluster.RemovedHost(ctx, cli, name); err != nil {
		return err
	} else if removed {
		return fmt.Errorf("host %s was removed from the cluster (by %s)", name, rem.RemovedBy)
	}
	taken, err := hostNameTaken(ctx, cli, name)
	if err != nil {
		return err
	}
	if !taken {
		return fmt.Errorf("host %s is not a host of this cluster", name)
	}
	return nil
}

// membership adapts the etcd client to join.Membership.
type membership struct{ cli *clientv3.Client }

func (m membership) Members(ctx context.Context) ([]join.Member, error) {
	ms, err := store.Members(ctx, m.cli)
	return convMembers(ms), err
}

func (m membership) AddLearner(ctx context.Context, peerURL string) (uint64, []join.Member, error) {
	id, ms, err := store.AddLearner(ctx, m.cli, peerURL)
	return id, convMembers(ms), err
}

func (m membership) RemoveMember(ctx context.Context, id uint64) error {
	return store.RemoveMember(ctx, m.cli, id)
}

func convMembers(ms []store.Member) []join.Member {
	out := make([]join.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, join.Member(m))
	}
	return out
}

// hostNameTaken reports whether a host of the cluster goes by name: it is
// registered (running now) or has published its state (it ran, and has
// not left or been removed: those forget it, cluster.ForgetOps). Client-only
// hosts have no etcd member, so this is how their names stay unique.
func hostNameTaken(ctx context.Context, cli *clientv3.Client, name string) (bool, error) {
	hosts, err := cluster.Hosts(ctx, cli)
	if err != nil {
		return false, err
	}
	if slices.ContainsFunc(hosts, func(h cluster.Host) bool { return h.Name == name }) {
		return true, nil
	}
	states, err := cluster.HostStates(ctx, cli)
	if err != nil {
		return false, err
	}
	_, ok := states[name]
	return ok, nil
}
