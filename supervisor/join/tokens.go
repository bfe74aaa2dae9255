package join

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TokenPrefix is the etcd prefix of the token records: TokenPrefix + id.
const TokenPrefix = "/m3sup/v1/tokens/"

// ErrTokenNotFound means no token has the given ID.
var ErrTokenNotFound = errors.New("join token not found")

// TokenInfo is what etcd keeps about a token: never the secret, only its
// SHA-256 (the secret is random and long, so a fast hash suffices).
type TokenInfo struct {
	ID          string    `json:"id"`
	SecretHash  string    `json:"secretHash"` // hex SHA-256 of the secret
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Expires     time.Time `json:"expires,omitzero"` // zero: never
}

// Expired reports whether the token is past its expiry at now.
func (i TokenInfo) Expired(now time.Time) bool {
	return !i.Expires.IsZero() && !now.Before(i.Expires)
}

// Tokens is the token store in etcd. CAHash is the hex SHA-256 of the CA
// certificate's DER: the pin written into every token it creates.
type Tokens struct {
	KV     clientv3.KV
	CAHash string
	Now    func() time.Time // nil means time.Now
}

func (s *Tokens) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func hashSecret(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// Create makes a token valid for ttl (zero: until revoked).
func (s *Tokens) Create(ctx context.Context, ttl time.Duration, description string) (Token, TokenInfo, error) {
	if ttl < 0 {
		return Token{}, TokenInfo{}, fmt.Errorf("create join token: negative TTL %s", ttl)
	}
	if len(s.CAHash) != 64 {
		return Token{}, TokenInfo{}, errors.New("create join token: the store has no CA hash")
	}
	for range 5 { // an ID collision is rare; draw again
		id, err := randomString(idLen)
		if err != nil {
			return Token{}, TokenInfo{}, err
		}
		secret, err := randomString(secretLen)
		if err != nil {
			return Token{}, TokenInfo{}, err
		}
		now := s.now().UTC()
		info := TokenInfo{ID: id, SecretHash: hex.EncodeToString(hashSecret(secret)), Description: description, Created: now}
		if ttl > 0 {
			info.Expires = now.Add(ttl)
		}
		val, err := json.Marshal(info)
		if err != nil {
			return Token{}, TokenInfo{}, fmt.Errorf("create join token: %w", err)
		}
		key := TokenPrefix + id
		resp, err := s.KV.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(val))).
			Commit()
		if err != nil {
			return Token{}, TokenInfo{}, fmt.Errorf("create join token: %w", err)
		}
		if resp.Succeeded {
			return Token{CAHash: s.CAHash, ID: id, Secret: secret}, info, nil
		}
	}
	return Token{}, TokenInfo{}, errors.New("create join token: no free token ID")
}

// List returns every token record, expired ones included, oldest first.
func (s *Tokens) List(ctx context.Context) ([]TokenInfo, error) {
	resp, err := s.KV.Get(ctx, TokenPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list join tokens: %w", err)
	}
	out := make([]TokenInfo, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var i TokenInfo
		if err := json.Unmarshal(kv.Value, &i); err != nil {
			return nil, fmt.Errorf("list join tokens: %s: %w", kv.Key, err)
		}
		out = append(out, i)
	}
	slices.SortFunc(out, func(a, b TokenInfo) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Revoke deletes the token id.
func (s *Tokens) Revoke(ctx context.Context, id string) error {
	if err := ValidateID(id); err != nil {
		return fmt.Errorf("revoke join token: %w", err)
	}
	resp, err := s.KV.Delete(ctx, TokenPrefix+id)
	if err != nil {
		return fmt.Errorf("revoke join token %s: %w", id, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("revoke join token %s: %w", id, ErrTokenNotFound)
	}
	return nil
}

// Check accepts tok if it pins this store's CA, exists, is not expired and
// its secret matches (compared in constant time). Every refusal wraps
// ErrRefused; errors reaching etcd do not.
func (s *Tokens) Check(ctx context.Context, tok Token) (TokenInfo, error) {
	if tok.CAHash != s.CAHash {
		return TokenInfo{}, fmt.Errorf("token %s pins another CA: %w", tok.ID, ErrRefused)
	}
	if err := ValidateID(tok.ID); err != nil {
		return TokenInfo{}, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	resp, err := s.KV.Get(ctx, TokenPrefix+tok.ID)
	if err != nil {
		return TokenInfo{}, fmt.Errorf("check join token %s: %w", tok.ID, err)
	}
	// Hash the presented secret whether or not the token exists, so timing
	// tells nothing either way.
	got := hashSecret(tok.Secret)
	if len(resp.Kvs) == 0 {
		return TokenInfo{}, fmt.Errorf("token %s unknown or revoked: %w", tok.ID, ErrRefused)
	}
	var info TokenInfo
	if err := json.Unmarshal(resp.Kvs[0].Value, &info); err != nil {
		return TokenInfo{}, fmt.Errorf("check join token %s: %w", tok.ID, err)
	}
	want, err := hex.DecodeString(info.SecretHash)
	if err != nil {
		return TokenInfo{}, fmt.Errorf("check join token %s: stored hash: %w", tok.ID, err)
	}
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return TokenInfo{}, fmt.Errorf("token %s: wrong secret: %w", tok.ID, ErrRefused)
	}
	if info.Expired(s.now()) {
		return TokenInfo{}, fmt.Errorf("token %s expired at %s: %w", tok.ID, info.Expires.Format(time.RFC3339), ErrRefused)
	}
	return info, nil
}
