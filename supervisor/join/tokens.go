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

const (
	// MaxTokenTTL is the longest a token may be valid: a token is a
	// credential, so none lives forever (`token create --ttl`).
	MaxTokenTTL = 30 * 24 * time.Hour
	// MaxTokenUses bounds TokenOptions.Uses.
	MaxTokenUses = 1000
	// casTries bounds Use's and Release's compare-and-swap retries under
	// contention.
	casTries = 10
)

// ErrTokenNotFound means no token has the given ID.
var ErrTokenNotFound = errors.New("join token not found")

// ErrInvalidTokenOptions marks a token request that cannot be granted (a
// TTL that is not positive or is too long, a bad use count).
var ErrInvalidTokenOptions = errors.New("invalid join token options")

// TokenOptions says what a new token grants.
//
// The zero value plus a TTL is the safe default: one join, as an etcd
// client-only host, that never receives the CA key.
type TokenOptions struct {
	TTL time.Duration // required: 0 < TTL <= MaxTokenTTL
	// Uses is how many joins the token admits; zero means one. Ignored
	// with Reusable.
	Uses int
	// Reusable admits any number of joins until the token expires or is
	// revoked (the fleet case); prefer Uses.
	Reusable bool
	// Voter lets the token make etcd voters, which receive the cluster CA
	// key (and with it the power to mint tokens and certificates). Without
	// it, a joining host is always an etcd client-only host.
	Voter       bool
	Description string
}

// Validate checks the options and fills their defaults.
func (o *TokenOptions) Validate() error {
	switch {
	case o.TTL <= 0:
		return fmt.Errorf("%w: ttl %s: must be positive (tokens never last forever; at most %s)", ErrInvalidTokenOptions, o.TTL, MaxTokenTTL)
	case o.TTL > MaxTokenTTL:
		return fmt.Errorf("%w: ttl %s: at most %s", ErrInvalidTokenOptions, o.TTL, MaxTokenTTL)
	case o.Uses < 0 || o.Uses > MaxTokenUses:
		return fmt.Errorf("%w: uses %d: want 1 to %d", ErrInvalidTokenOptions, o.Uses, MaxTokenUses)
	case o.Reusable && o.Uses > 1:
		return fmt.Errorf("%w: uses %d with reusable: a reusable token has no use count; pick one", ErrInvalidTokenOptions, o.Uses)
	case len(o.Description) > 256:
		return fmt.Errorf("%w: description: at most 256 bytes", ErrInvalidTokenOptions)
	}
	if o.Uses == 0 && !o.Reusable {
		o.Uses = 1
	}
	if o.Reusable {
		o.Uses = 0
	}
	return nil
}

// TokenInfo is what etcd keeps about a token: never the secret, only its
// SHA-256 (the secret is random and long, so a fast hash suffices).
type TokenInfo struct {
	ID          string    `json:"id"`
	SecretHash  string    `json:"secretHash"` // hex SHA-256 of the secret
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	// Expires is when the token stops working. A record without one (made
	// before tokens had to expire) is refused.
	Expires time.Time `json:"expires,omitzero"`
	// Voter: the token may make etcd voters (and hand out the CA key).
	Voter bool `json:"voter,omitempty"`
	// Reusable: no use count. Otherwise the token admits Uses joins; a
	// record with neither (made before tokens were counted) admits none.
	Reusable bool `json:"reusable,omitempty"`
	Uses     int  `json:"uses,omitempty"`
	// Used counts the joins admitted so far; UsedBy names their hosts
	// (the last 16).
	Used   int      `json:"used,omitempty"`
	UsedBy []string `json:"usedBy,omitempty"`
}

// Expired reports whether the token is past its expiry at now. A token
// without an expiry is expired: only records written before every token
// had one lack it.
func (i TokenInfo) Expired(now time.Time) bool {
	return i.Expires.IsZero() || !now.Before(i.Expires)
}

// UsedUp reports whether the token has no joins left.
func (i TokenInfo) UsedUp() bool { return !i.Reusable && i.Used >= i.Uses }

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

// Create makes a token as o says.
func (s *Tokens) Create(ctx context.Context, o TokenOptions) (Token, TokenInfo, error) {
	if err := o.Validate(); err != nil {
		return Token{}, TokenInfo{}, fmt.Errorf("create join token: %w", err)
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
		info := TokenInfo{ID: id, SecretHash: hex.EncodeToString(hashSecret(secret)), Description: o.Description,
			Created: now, Expires: now.Add(o.TTL), Voter: o.Voter, Reusable: o.Reusable, Uses: o.Uses}
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

// Check accepts tok if it pins this store's CA, exists, is not expired,
// has a join left and its secret matches (compared in constant time). It
// consumes nothing (Use does). Every refusal wraps ErrRefused; errors
// reaching etcd do not.
func (s *Tokens) Check(ctx context.Context, tok Token) (TokenInfo, error) {
	info, _, err := s.check(ctx, tok)
	return info, err
}

// check is Check that also returns the record's mod revision.
func (s *Tokens) check(ctx context.Context, tok Token) (TokenInfo, int64, error) {
	if tok.CAHash != s.CAHash {
		return TokenInfo{}, 0, fmt.Errorf("token %s pins another CA: %w", tok.ID, ErrRefused)
	}
	if err := ValidateID(tok.ID); err != nil {
		return TokenInfo{}, 0, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	resp, err := s.KV.Get(ctx, TokenPrefix+tok.ID)
	if err != nil {
		return TokenInfo{}, 0, fmt.Errorf("check join token %s: %w", tok.ID, err)
	}
	// Hash the presented secret whether or not the token exists, so timing
	// tells nothing either way.
	got := hashSecret(tok.Secret)
	if len(resp.Kvs) == 0 {
		return TokenInfo{}, 0, fmt.Errorf("token %s unknown or revoked: %w", tok.ID, ErrRefused)
	}
	var info TokenInfo
	if err := json.Unmarshal(resp.Kvs[0].Value, &info); err != nil {
		return TokenInfo{}, 0, fmt.Errorf("check join token %s: %w", tok.ID, err)
	}
	want, err := hex.DecodeString(info.SecretHash)
	if err != nil {
		return TokenInfo{}, 0, fmt.Errorf("check join token %s: stored hash: %w", tok.ID, err)
	}
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return TokenInfo{}, 0, fmt.Errorf("token %s: wrong secret: %w", tok.ID, ErrRefused)
	}
	if info.Expired(s.now()) {
		return TokenInfo{}, 0, fmt.Errorf("token %s expired (expiry %q): %w", tok.ID, info.Expires.Format(time.RFC3339), ErrRefused)
	}
	if info.UsedUp() {
		return TokenInfo{}, 0, fmt.Errorf("token %s used up (%d of %d joins): %w", tok.ID, info.Used, info.Uses, ErrRefused)
	}
	return info, resp.Kvs[0].ModRevision, nil
}

// Use checks tok as Check does and takes one of its joins for host, in one
// etcd transaction that compares the record's revision: of two joins that
// race for a token's last use, exactly one gets it; the other is refused
// (ErrRefused). The returned info counts this use.
func (s *Tokens) Use(ctx context.Context, tok Token, host string) (TokenInfo, error) {
	for range casTries {
		info, rev, err := s.check(ctx, tok)
		if err != nil {
			return TokenInfo{}, err
		}
		info.Used++
		info.UsedBy = append(info.UsedBy, host)
		if n := len(info.UsedBy); n > 16 {
			info.UsedBy = info.UsedBy[n-16:]
		}
		ok, err := s.swap(ctx, info, rev)
		if err != nil {
			return TokenInfo{}, fmt.Errorf("use join token %s: %w", tok.ID, err)
		}
		if ok {
			return info, nil
		}
	}
	return TokenInfo{}, fmt.Errorf("use join token %s: too many concurrent joins; retry", tok.ID)
}

// Release gives back a join that Use took for host when the join then
// failed before it changed anything. A token revoked meanwhile stays
// revoked.
func (s *Tokens) Release(ctx context.Context, id, host string) error {
	key := TokenPrefix + id
	for range casTries {
		resp, err := s.KV.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("release join token %s: %w", id, err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		var info TokenInfo
		if err := json.Unmarshal(resp.Kvs[0].Value, &info); err != nil {
			return fmt.Errorf("release join token %s: %w", id, err)
		}
		i := slices.Index(info.UsedBy, host)
		if info.Used == 0 || i < 0 {
			return nil
		}
		info.Used--
		info.UsedBy = slices.Delete(info.UsedBy, i, i+1)
		ok, err := s.swap(ctx, info, resp.Kvs[0].ModRevision)
		if err != nil {
			return fmt.Errorf("release join token %s: %w", id, err)
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("release join token %s: too many concurrent joins", id)
}

// swap writes info if its record is still at revision rev.
func (s *Tokens) swap(ctx context.Context, info TokenInfo, rev int64) (bool, error) {
	val, err := json.Marshal(info)
	if err != nil {
		return false, err
	}
	key := TokenPrefix + info.ID
	resp, err := s.KV.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(val))).
		Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}
