package join

import (
	"context"
	"errors"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/pki"
)

// ErrNotIssuer is TokenService's answer on a host that cannot issue join
// tokens; the local API answers it as a conflict.
var ErrNotIssuer = errors.New("join tokens are issued by an etcd voter that holds the cluster CA (the first host, or a voter that joined it), once its etcd is up")

// NewTokens returns the token store in kv whose tokens pin ca.
func NewTokens(kv clientv3.KV, ca *pki.CA) *Tokens {
	return &Tokens{KV: kv, CAHash: strings.TrimPrefix(ca.Fingerprint(), "sha256:")}
}

// TokenService is a host's `m3sup token` API (api.Tokens): it issues,
// lists and revokes join tokens once Enable gave it the cluster CA and
// etcd, and answers ErrNotIssuer until then (and forever on a host that
// does not hold the CA). The zero value is ready to use.
type TokenService struct {
	mu sync.Mutex
	ts *Tokens
}

// Enable lets s serve the tokens in kv that pin ca.
func (s *TokenService) Enable(kv clientv3.KV, ca *pki.CA) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ts = NewTokens(kv, ca)
}

func (s *TokenService) tokens() (*Tokens, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ts == nil {
		return nil, ErrNotIssuer
	}
	return s.ts, nil
}

// CreateToken makes a token as o says and returns it encoded, the only
// time its secret is shown.
func (s *TokenService) CreateToken(ctx context.Context, o TokenOptions) (string, TokenInfo, error) {
	ts, err := s.tokens()
	if err != nil {
		return "", TokenInfo{}, err
	}
	tok, info, err := ts.Create(ctx, o)
	return tok.Encode(), info, err
}

// ListTokens lists the tokens.
func (s *TokenService) ListTokens(ctx context.Context) ([]TokenInfo, error) {
	ts, err := s.tokens()
	if err != nil {
		return nil, err
	}
	return ts.List(ctx)
}

// RevokeToken revokes token id.
func (s *TokenService) RevokeToken(ctx context.Context, id string) error {
	ts, err := s.tokens()
	if err != nil {
		return err
	}
	return ts.Revoke(ctx, id)
}
