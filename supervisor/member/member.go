package member

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/supervisor/join"
	"github.com/m3sup/m3sup/supervisor/pki"
	"github.com/m3sup/m3sup/supervisor/store"
)

// ContainerPKI is where M3's containers see Paths.M3PKI.
const ContainerPKI = "/etc/m3sup-pki"

// Paths are this host's files under its data dir.
type Paths struct {
	PKI         string // <dataDir>/pki (0700): the CA, this host's etcd certificates
	M3PKI       string // <dataDir>/pki/m3: only what M3's containers may see
	Etcd        string // the member's data dir
	ClusterFile string // <dataDir>/cluster.json of a joined host
}

// Options says which etcd this host runs and where it keeps it.
type Options struct {
	NodeName string
	EtcdName string // the member's name
	// ClientURL and PeerURL are the configured etcd URLs: a single node
	// listens on their hosts; in multi-host mode only their ports count,
	// on Advertise.
	ClientURL, PeerURL string
	// MultiHost: this host belongs to a multi-host cluster; Joined: it
	// joined another host's (a join URL, and Paths.ClusterFile), else it
	// is the first host.
	MultiHost, Joined bool
	// Advertise is the address other hosts reach this host by.
	Advertise string
	// JoinListen (host:port) serves joins on a host that holds the CA;
	// MaxVoters is cluster.maxVoters.
	JoinListen string
	MaxVoters  int
	// CertTTL is the validity of every certificate this host issues
	// (cluster.certLifetime); zero means pki.DefaultTTL. RenewCerts renews
	// them in place.
	CertTTL      time.Duration
	StartTimeout time.Duration
	Paths        Paths
	Logger       *zap.Logger
	// Progress reports a long step of the start (a learner catching up);
	// nil reports nothing.
	Progress func(msg string)
}

// AdvertisedURLs returns the client and peer URLs of this host's member in
// multi-host mode: https, on the advertise address, with the configured
// ports.
func (o Options) AdvertisedURLs() (client, peer string, err error) {
	if o.Advertise == "" {
		return "", "", errors.New("multi-host mode needs cluster.advertise (the address other hosts reach this host by)")
	}
	if client, err = urlOn(o.Advertise, o.ClientURL); err != nil {
		return "", "", err
	}
	peer, err = urlOn(o.Advertise, o.PeerURL)
	return client, peer, err
}

// Target says what Start is about to reach, for the daemon's status: the
// client URL, or the voters of a client-only host.
func (o Options) Target() string {
	u, _ := localURL(o.ClientURL)
	if o.MultiHost {
		if adv, _, err := o.AdvertisedURLs(); err == nil {
			u = adv
		}
		if cf, err := join.ReadClusterFile(o.Paths.ClusterFile); err == nil && cf.Role == join.RoleClient {
			u = "client-only host; voters " + strings.Join(cf.Endpoints, ", ")
		}
	}
	return u
}

func (o Options) progress(msg string) {
	if o.Progress != nil {
		o.Progress(msg)
	}
}

// urlOn returns u (a configured etcd URL) as https on host.
func urlOn(host, u string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return "", fmt.Errorf("etcd URL %q: %w", u, err)
	}
	_, port, err := net.SplitHostPort(pu.Host)
	if err != nil {
		return "", fmt.Errorf("etcd URL %q: %w", u, err)
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

// localURL returns the configured etcd URL u as https on its own host.
func localURL(u string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return "", fmt.Errorf("etcd URL %q: %w", u, err)
	}
	if pu.Host == "" {
		return "", fmt.Errorf("etcd URL %q: no host", u)
	}
	return "https://" + pu.Host, nil
}

// Member is this host's running etcd (a member, or a client-only host's
// client of the voters), the cluster CA it holds, and how M3 reaches etcd.
// Start it, Close it once.
type Member struct {
	o    Options
	etcd *store.Etcd
	ca   *pki.CA
	m3   M3Etcd

	// issuer is the CA that issues this host's own certificates: ca, or a
	// single node's own CA; nil on a host without the CA key. hostNames
	// are the SANs of its member certificate.
	issuer    *pki.CA
	hostNames []string
	// joinCert is the join endpoint's certificate, swapped by RenewCerts;
	// the endpoint reads it at every handshake.
	joinCert atomic.Pointer[tls.Certificate]
}

// Etcd is the running etcd; the rest of m3sup uses its Client.
func (m *Member) Etcd() *store.Etcd { return m.etcd }

// CA is the cluster CA this host holds (multi-host mode: the first host, or
// a voter that received it with its join), or nil. A single node's CA
// issues only its own certificates and is not returned.
func (m *Member) CA() *pki.CA { return m.ca }

// M3Etcd is how M3 reaches etcd as Start found it; FollowVoters gives the
// voters of later.
func (m *Member) M3Etcd() M3Etcd { return m.m3 }

// Close stops the member (or closes the client).
func (m *Member) Close() { m.etcd.Close() }

// Start starts this host's etcd in the shape Options say (see the package
// doc). Whatever it is, the rest of m3sup uses the Etcd's client; M3 is
// configured with every voter either way. It returns store.ErrMemberRemoved
// (wrapped) for a member removed from the cluster while it was down.
func Start(ctx context.Context, o Options) (*Member, error) {
	if !o.MultiHost {
		return startLocal(ctx, o)
	}
	m := &Member{o: o}
	var cf *join.ClusterFile
	if !o.Joined {
		ca, err := m.firstHostPKI()
		if err != nil {
			return nil, err
		}
		m.ca = ca
	} else {
		var err error
		if cf, err = join.ReadClusterFile(o.Paths.ClusterFile); err != nil {
			return nil, err
		}
		if cf.Role == join.RoleVoter {
			if err := m.loadJoinedCA(); err != nil {
				return nil, err
			}
		}
	}
	dir := o.Paths.PKI
	var err error
	if cf != nil && cf.Role == join.RoleClient {
		m.etcd, err = store.ConnectCluster(ctx, store.ClientOptions{
			Endpoints: cf.Endpoints,
			CAFile:    filepath.Join(dir, pki.CACertFile),
			CertFile:  filepath.Join(dir, pki.ClientCertFile), KeyFile: filepath.Join(dir, pki.ClientKeyFile),
			StartTimeout: o.StartTimeout,
			Logger:       o.Logger,
		})
		if err != nil {
			return nil, err
		}
		o.Logger.Info("etcd client-only host: no local member; using the cluster's voters", zap.Strings("endpoints", m.etcd.Client().Endpoints()))
	} else if m.etcd, err = m.startMember(ctx, cf); err != nil {
		return nil, err
	}
	if m.ca != nil && m.etcd.Member() {
		// A voter that holds the CA sets up etcd's authorization (once; at
		// every start it adds what is missing), as root on its own member.
		clientURL, _, err := o.AdvertisedURLs()
		if err == nil {
			err = asRoot(ctx, m.ca, clientURL, o.Logger, m.ensureClusterAuth)
		}
		if err != nil {
			m.etcd.Close()
			return nil, err
		}
	}
	if m.ca != nil {
		// M3 gets its own certificate: M3's keys only.
		err = m.issueM3(m.ca)
	} else {
		// A host without the CA key cannot issue one: M3 uses the host's
		// (a client-only host's identity, which cannot touch tokens).
		err = pki.CopyFiles(dir, o.Paths.M3PKI, pki.CACertFile, pki.ClientCertFile, pki.ClientKeyFile)
	}
	if err != nil {
		m.etcd.Close()
		return nil, err
	}
	// M3 talks to every voter.
	if m.m3, err = m.FollowVoters(ctx); err != nil {
		m.etcd.Close()
		return nil, err
	}
	return m, nil
}

// issueM3 gives M3 its certificate (pki.IssueM3) unless the one it has is
// current (pki.M3Current): a new one restarts M3.
func (m *Member) issueM3(ca *pki.CA) error {
	if ca.M3Current(m.o.Paths.M3PKI, m.o.NodeName, m.o.CertTTL, time.Now()) {
		return nil
	}
	return ca.IssueM3(m.o.Paths.M3PKI, m.o.NodeName, m.o.CertTTL)
}

// loadOrCreateCA loads the CA kept in dir, or creates one named name there.
func (m *Member) loadOrCreateCA(dir, name string) (*pki.CA, error) {
	ca, created, err := pki.LoadOrCreateCA(dir, name, time.Now())
	if created {
		m.o.Logger.Info("created the "+name, zap.String("dir", dir), zap.String("fingerprint", ca.Fingerprint()))
	}
	return ca, err
}

// firstHostPKI loads or creates the cluster CA and (re)issues this host's
// etcd peer and client certificates for its advertise address.
func (m *Member) firstHostPKI() (*pki.CA, error) {
	ca, err := m.loadOrCreateCA(m.o.Paths.PKI, "m3sup cluster CA")
	if err != nil {
		return nil, err
	}
	m.issuer, m.hostNames = ca, []string{m.o.NodeName, m.o.Advertise}
	if err := ca.IssueHost(m.o.Paths.PKI, m.o.NodeName, m.hostNames, m.o.CertTTL); err != nil {
		return nil, err
	}
	return ca, nil
}

// loadJoinedCA loads the CA a joined voter received with its join, if it
// did (a voter that joined an m3sup that did not share the CA has none),
// and reissues the voter's etcd certificates from it.
func (m *Member) loadJoinedCA() error {
	ca, err := pki.LoadCA(m.o.Paths.PKI)
	if errors.Is(err, os.ErrNotExist) {
		m.o.Logger.Info("this voter does not hold the cluster CA (it joined before voters received it): it cannot issue tokens or serve joins")
		return nil
	}
	if err != nil {
		return err
	}
	m.ca = ca
	// Its member certificate came with the join, for the names the join
	// endpoint checked: keep them. Reissued at every start, as the first
	// host's are, so a CA replaced by hand (README, "Certificates")
	// takes effect at the next start.
	m.issuer = ca
	_, c, err := pki.ReadCertFile(filepath.Join(m.o.Paths.PKI, pki.PeerCertFile))
	if err != nil {
		return fmt.Errorf("this voter's member certificate: %w", err)
	}
	m.hostNames = certHosts(c)
	return ca.IssueHost(m.o.Paths.PKI, m.o.NodeName, m.hostNames, m.o.CertTTL)
}

// clusterTLS is the member's certificates in dir.
func clusterTLS(dir string) store.ClusterTLS {
	return store.ClusterTLS{
		CAFile:   filepath.Join(dir, pki.CACertFile),
		CertFile: filepath.Join(dir, pki.PeerCertFile), KeyFile: filepath.Join(dir, pki.PeerKeyFile),
		ClientCertFile: filepath.Join(dir, pki.ClientCertFile), ClientKeyFile: filepath.Join(dir, pki.ClientKeyFile),
	}
}

// startMember starts this host's etcd member over mutual TLS: the first
// member of a new cluster (cf nil, the first host) or a joined voter (from
// cluster.json), which starts as a learner and is promoted here.
func (m *Member) startMember(ctx context.Context, cf *join.ClusterFile) (*store.Etcd, error) {
	o := m.o
	clientURL, peerURL, err := o.AdvertisedURLs()
	if err != nil {
		return nil, err
	}
	co := store.ClusterOptions{
		Name: o.EtcdName, Dir: o.Paths.Etcd, ClientURL: clientURL, PeerURL: peerURL,
		TLS:           clusterTLS(o.Paths.PKI),
		AllowedPeerCN: pki.EtcdPeerCN,
		StartTimeout:  o.StartTimeout,
		Logger:        o.Logger,
	}
	if cf != nil {
		co.State, co.InitialCluster = store.StateExisting, cf.InitialCluster
		// A learner serves no clients: talk to the voters until promoted.
		co.Endpoints = cf.Endpoints
	}
	e, err := store.StartClusterEtcd(ctx, co)
	if err != nil {
		return nil, err
	}
	if cf != nil {
		o.progress("learner catching up; promoting")
		if err := store.PromoteWhenReady(ctx, e.Client(), cf.MemberID); err != nil {
			e.Close()
			return nil, err
		}
		o.Logger.Info("etcd member promoted to voter", zap.String("member", fmt.Sprintf("%x", cf.MemberID)))
		// A voter serves clients: use it, as the first host uses its own,
		// not the voters of the join, which may leave (the first host too).
		e.Client().SetEndpoints(clientURL)
	}
	return e, nil
}
