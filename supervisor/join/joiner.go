package join

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/m3sup/m3sup/internal/atomicfile"
	"github.com/m3sup/m3sup/supervisor/pki"
)

// ClusterFile is what a joined host remembers of its join
// (<dataDir>/cluster.json), so a restart starts its etcd member instead of
// joining again. Endpoints follow the etcd voters of the last start.
type ClusterFile struct {
	JoinURL        string    `json:"joinURL"`
	Role           Role      `json:"role"`
	MemberID       uint64    `json:"memberID,string"`
	InitialCluster string    `json:"initialCluster,omitempty"`
	Endpoints      []string  `json:"endpoints"`
	Joined         time.Time `json:"joined"`
}

// ReadClusterFile reads the cluster file at path; a missing file is an
// os.ErrNotExist error.
func ReadClusterFile(path string) (*ClusterFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cf := &ClusterFile{}
	if err := json.Unmarshal(b, cf); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cf, nil
}

// WriteClusterFile writes cf to path (0600), atomically.
func WriteClusterFile(path string, cf ClusterFile) error {
	b, err := json.MarshalIndent(cf, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return atomicfile.WriteFile(path, b, 0o600)
}

// Resume returns the join URL of a host that joined before (from the
// cluster file at path), or "" when it never joined (no such file). A host
// started without --join (a unit file that only names the config) is thus
// a joined host again, and never starts as a lone single node on a data
// dir that belongs to a cluster.
func Resume(path string, log *zap.Logger) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	var cf ClusterFile
	if err := json.Unmarshal(b, &cf); err != nil || cf.JoinURL == "" {
		return "", fmt.Errorf("%s: no join URL in it (%v); start with --join to repair it", path, err)
	}
	log.Info("joined host: starting from "+path, zap.String("join", cf.JoinURL))
	return cf.JoinURL, nil
}

// Joiner is a host that joins another host's cluster (`m3sup run --join URL
// --token T`): it asks for certificates and an etcd seat before the host
// starts anything, and keeps the answer in its PKI dir and cluster file.
type Joiner struct {
	URL      string // https://host:port of a CA holder's join endpoint
	Token    string // K10<ca-hash>::<id>.<secret>
	NodeName string
	// Advertise is the address other hosts reach this host by.
	Advertise string
	// EtcdURLs returns the client and peer URLs this host's etcd member
	// will advertise; asked only when the host joins now.
	EtcdURLs func() (client, peer string, err error)
	// PKIDir receives the certificates (<dataDir>/pki); ClusterFile is
	// <dataDir>/cluster.json.
	PKIDir      string
	ClusterFile string
	Logger      *zap.Logger

	// Timeout is how long Join keeps trying while the cluster refuses for
	// now (cluster.joinTimeout); zero means DefaultJoinWait.
	Timeout time.Duration
	// Backoff spaces the attempts; zero means DefaultBackoff.
	Backoff Backoff
	// Progress, when set, hears each retry's log line (status, systemd).
	Progress func(msg string)
	// Now, Rand ([0, 1)) and Wait (block for d or until ctx is done) are
	// the clock, the jitter and the sleep; nil means the real ones. Tests
	// inject them.
	Now  func() time.Time
	Rand func() float64
	Wait func(ctx context.Context, d time.Duration) error
}

func (j *Joiner) now() time.Time {
	if j.Now != nil {
		return j.Now()
	}
	return time.Now()
}

func (j *Joiner) wait(ctx context.Context, d time.Duration) error {
	if j.Wait != nil {
		return j.Wait(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Join performs the join handshake and persists its answer; a host that
// joined before (its cluster file exists) reuses it, and one without a URL
// is no joiner: both return nil at once.
//
// A transient refusal (Classify: another host is joining, the endpoint is
// busy, rate limiting, not up or not answering) is retried with Backoff,
// each retry logged with its reason, delay and deadline, until Timeout
// has passed since the first attempt; then Join fails with the last
// refusal. A permanent refusal (a bad, expired or used-up token, a CA
// that is not the pinned one, a name in use, a bad request) is returned
// at once, as is ctx's end.
//
// A voter gets a member (peer) certificate and, from a CA holder that
// shares it, the CA key (kept 0600 under PKIDir, never in M3's copy); a
// client-only host (the cluster has cluster.maxVoters voters already) gets
// only the client certificate.
func (j *Joiner) Join(ctx context.Context) error {
	if j.URL == "" {
		return nil
	}
	if _, err := os.Stat(j.ClusterFile); err == nil {
		j.Logger.Info("already joined; starting from " + j.ClusterFile)
		return nil
	}
	clientURL, peerURL, err := j.EtcdURLs()
	if err != nil {
		return err
	}
	if j.Token == "" {
		return errors.New("--join needs --token or --token-file")
	}
	req := Request{NodeName: j.NodeName, Advertise: []string{j.Advertise},
		WantVoter: true, PeerURL: peerURL, ClientURL: clientURL}
	resp, err := j.joinRetrying(ctx, req)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		pki.CACertFile:     []byte(resp.CACert),
		pki.ClientCertFile: []byte(resp.ClientCert), pki.ClientKeyFile: []byte(resp.ClientKey),
	}
	switch resp.Role {
	case RoleVoter:
		files[pki.PeerCertFile], files[pki.PeerKeyFile] = []byte(resp.PeerCert), []byte(resp.PeerKey)
		if resp.CAKey != "" { // Join checked that it matches CACert
			files[pki.CAKeyFile] = []byte(resp.CAKey)
		}
	case RoleClient:
	default:
		return fmt.Errorf("join %s: unknown etcd role %q in the answer", j.URL, resp.Role)
	}
	if err := os.MkdirAll(j.PKIDir, 0o700); err != nil {
		return err
	}
	for name, b := range files {
		if err := atomicfile.WriteFile(filepath.Join(j.PKIDir, name), b, 0o600); err != nil {
			return err
		}
	}
	cf := ClusterFile{JoinURL: j.URL, Role: resp.Role, MemberID: resp.MemberID,
		InitialCluster: resp.InitialCluster, Endpoints: resp.Endpoints, Joined: time.Now().UTC()}
	if err := WriteClusterFile(j.ClusterFile, cf); err != nil {
		return err
	}
	j.Logger.Info("joined the cluster", zap.String("join", j.URL), zap.String("role", string(resp.Role)),
		zap.String("member", fmt.Sprintf("%x", resp.MemberID)), zap.Strings("endpoints", resp.Endpoints))
	return nil
}

// joinRetrying asks until admitted, refused for good, out of time or
// cancelled.
func (j *Joiner) joinRetrying(ctx context.Context, req Request) (Response, error) {
	wait := j.Timeout
	if wait <= 0 {
		wait = DefaultJoinWait
	}
	rnd := j.Rand
	if rnd == nil {
		rnd = rand.Float64
	}
	first := j.now()
	deadline := first.Add(wait)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, min(DefaultAttemptTimeout, deadline.Sub(j.now())))
		resp, err := Join(actx, j.URL, j.Token, req)
		cancel()
		if err == nil {
			if attempt > 1 {
				j.Logger.Info("join admitted", zap.Int("attempt", attempt), zap.Duration("after", j.now().Sub(first).Round(time.Millisecond)))
			}
			return resp, nil
		}
		if ctx.Err() != nil {
			return Response{}, fmt.Errorf("join %s: %w", j.URL, ctx.Err())
		}
		step := nextStep(j.Backoff, attempt, err, j.now(), deadline, rnd())
		if !step.Why.Transient {
			return Response{}, err
		}
		if !step.Retry {
			return Response{}, fmt.Errorf("join %s: still refused after %d attempts over %s (cluster.joinTimeout %s): %s: %w",
				j.URL, attempt, j.now().Sub(first).Round(time.Second), wait, step.Why.Reason, err)
		}
		line := retryLine(step, attempt, deadline)
		j.Logger.Warn(line, zap.Error(err))
		if j.Progress != nil {
			j.Progress(line)
		}
		if err := j.wait(ctx, step.Wait); err != nil {
			return Response{}, fmt.Errorf("join %s: %w", j.URL, err)
		}
	}
}
