package join_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/m3sup/m3sup/supervisor/join"
)

const hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseToken(t *testing.T) {
	s := "K10" + hash + "::abc123.0123456789abcdefghijklmnopqrstuv"
	tok, err := join.ParseToken(" " + s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if tok.CAHash != hash || tok.ID != "abc123" || tok.Secret != "0123456789abcdefghijklmnopqrstuv" {
		t.Errorf("parsed %#v", tok)
	}
	if tok.Encode() != s {
		t.Errorf("Encode = %q", tok.Encode())
	}
	if strings.Contains(tok.String(), tok.Secret) || strings.Contains(fmt.Sprintf("%v %+v", tok, tok), tok.Secret) {
		t.Errorf("String leaks the secret: %s", tok)
	}
	if tok.CAFingerprint() != "sha256:"+hash {
		t.Error(tok.CAFingerprint())
	}
	for name, bad := range map[string]string{
		"empty":         "",
		"short form":    "abc123.0123456789abcdefghijklmnopqrstuv",
		"k3s user:pass": "K10" + hash + "::server:secret",
		"no separator":  "K10" + hash + "abc123.0123456789abcdefghijklmnopqrstuv",
		"short hash":    "K10" + hash[:10] + "::abc123.0123456789abcdefghijklmnopqrstuv",
		"upper hash":    "K10" + strings.ToUpper(hash) + "::abc123.0123456789abcdefghijklmnopqrstuv",
		"long id":       "K10" + hash + "::abc1234.0123456789abcdefghijklmnopqrstuv",
		"short secret":  "K10" + hash + "::abc123.0123",
		"bad secret":    "K10" + hash + "::abc123.0123456789abcdefghijklmnopqrstu!",
	} {
		if _, err := join.ParseToken(bad); !errors.Is(err, join.ErrInvalidToken) {
			t.Errorf("%s: %v, want ErrInvalidToken", name, err)
		}
	}
}

func TestTokens(t *testing.T) {
	e := startEtcd(t)
	ctx := testCtx(t)
	clk := &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	s := &join.Tokens{KV: e.Client(), CAHash: hash, Now: clk.Now}

	daily, info, err := s.Create(ctx, join.TokenOptions{TTL: 24 * time.Hour, Description: "daily"})
	if err != nil {
		t.Fatal(err)
	}
	if !info.Expires.Equal(clk.Now().Add(24*time.Hour)) || info.Description != "daily" || daily.CAHash != hash ||
		info.Uses != 1 || info.Voter || info.Reusable {
		t.Errorf("info %+v (want one use, no voter, expiry in a day)", info)
	}
	if err := daily.Validate(); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	hourly, info2, err := s.Create(ctx, join.TokenOptions{TTL: time.Hour, Reusable: true, Voter: true})
	if err != nil {
		t.Fatal(err)
	}
	if !info2.Expires.Equal(clk.Now().Add(time.Hour)) || !info2.Reusable || !info2.Voter {
		t.Errorf("info %+v", info2)
	}

	// etcd holds the secret's hash, never the secret.
	resp, err := e.Client().Get(ctx, join.TokenPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Value), daily.Secret) || strings.Contains(string(kv.Value), hourly.Secret) {
			t.Fatalf("%s stores a secret: %s", kv.Key, kv.Value)
		}
	}

	list, err := s.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != daily.ID || list[1].ID != hourly.ID {
		t.Fatalf("List = %+v, %v", list, err)
	}

	for _, tok := range []join.Token{daily, hourly} {
		if _, err := s.Check(ctx, tok); err != nil {
			t.Errorf("Check(%s): %v", tok, err)
		}
	}
	wrong := hourly
	wrong.Secret = daily.Secret
	otherCA := hourly
	otherCA.CAHash = strings.Repeat("f", 64)
	for name, tok := range map[string]join.Token{"wrong secret": wrong, "other CA": otherCA} {
		if _, err := s.Check(ctx, tok); !errors.Is(err, join.ErrRefused) {
			t.Errorf("%s: %v, want ErrRefused", name, err)
		}
		if _, err := s.Use(ctx, tok, "h"); !errors.Is(err, join.ErrRefused) {
			t.Errorf("Use with %s: %v, want ErrRefused", name, err)
		}
	}

	// A reusable token is not counted down.
	for i := range 3 {
		if _, err := s.Use(ctx, hourly, fmt.Sprintf("h%d", i)); err != nil {
			t.Fatalf("reusable token, use %d: %v", i+1, err)
		}
	}

	clk.Add(time.Hour)
	if _, err := s.Check(ctx, hourly); !errors.Is(err, join.ErrRefused) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired: %v", err)
	}
	if _, err := s.Use(ctx, hourly, "late"); !errors.Is(err, join.ErrRefused) {
		t.Errorf("use of an expired token: %v", err)
	}
	if _, err := s.Check(ctx, daily); err != nil {
		t.Errorf("daily token after an hour: %v", err)
	}

	if err := s.Revoke(ctx, daily.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Check(ctx, daily); !errors.Is(err, join.ErrRefused) {
		t.Errorf("revoked: %v", err)
	}
	if err := s.Revoke(ctx, daily.ID); !errors.Is(err, join.ErrTokenNotFound) {
		t.Errorf("revoke twice: %v", err)
	}
	if err := s.Revoke(ctx, "../x"); !errors.Is(err, join.ErrInvalidToken) {
		t.Errorf("revoke bad id: %v", err)
	}

	// A record without an expiry (written before tokens had to expire, or
	// by hand) is refused, and so is one without a use count.
	legacy := func(id, extra string) join.Token {
		tok := join.Token{CAHash: hash, ID: id, Secret: strings.Repeat("s", 32)}
		sum := sha256.Sum256([]byte(tok.Secret))
		val := fmt.Sprintf(`{"id":%q,"secretHash":%q,"created":"2026-01-01T00:00:00Z"%s}`, id, hex.EncodeToString(sum[:]), extra)
		if _, err := e.Client().Put(ctx, join.TokenPrefix+id, val); err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for id, extra := range map[string]string{"noexpy": ``, "nouses": `,"expires":"2027-01-01T00:00:00Z"`} {
		if _, err := s.Check(ctx, legacy(id, extra)); !errors.Is(err, join.ErrRefused) {
			t.Errorf("legacy record %s: %v, want refused", id, err)
		}
	}
}

// TestTokenOptions: a TTL that is not positive (finding 6: `--ttl -5s`
// made a token that never expired), too long, or a bad use count is
// refused with an error naming the field, and nothing is written.
func TestTokenOptions(t *testing.T) {
	e := startEtcd(t)
	ctx := testCtx(t)
	s := &join.Tokens{KV: e.Client(), CAHash: hash}
	for _, tt := range []struct {
		o    join.TokenOptions
		want string
	}{
		{join.TokenOptions{TTL: -5 * time.Second}, "ttl -5s: must be positive"},
		{join.TokenOptions{}, "ttl 0s: must be positive"},
		{join.TokenOptions{TTL: join.MaxTokenTTL + time.Second}, "ttl 720h0m1s: at most 720h0m0s"},
		{join.TokenOptions{TTL: time.Hour, Uses: -1}, "uses -1"},
		{join.TokenOptions{TTL: time.Hour, Uses: join.MaxTokenUses + 1}, "uses 1001"},
		{join.TokenOptions{TTL: time.Hour, Uses: 3, Reusable: true}, "uses 3 with reusable"},
	} {
		_, _, err := s.Create(ctx, tt.o)
		if !errors.Is(err, join.ErrInvalidTokenOptions) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Create(%+v) = %v, want an error saying %q", tt.o, err, tt.want)
		}
	}
	if list, err := s.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("refused creates wrote %d tokens: %v", len(list), err)
	}
}

// TestTokenSingleUse: a single-use token admits one join; a second is
// refused; Release gives the use back; of many parallel uses of one
// single-use token exactly one wins (the use is one etcd transaction
// comparing the record's revision); a token for N uses admits exactly N.
func TestTokenSingleUse(t *testing.T) {
	e := startEtcd(t)
	ctx := testCtx(t)
	s := &join.Tokens{KV: e.Client(), CAHash: hash}
	once, _, err := s.Create(ctx, join.TokenOptions{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Use(ctx, once, "host2")
	if err != nil || info.Used != 1 || !slices.Equal(info.UsedBy, []string{"host2"}) {
		t.Fatalf("first use: %+v, %v", info, err)
	}
	if _, err := s.Use(ctx, once, "host3"); !errors.Is(err, join.ErrRefused) || !strings.Contains(err.Error(), "used up") {
		t.Fatalf("reused single-use token: %v, want refused as used up", err)
	}
	if _, err := s.Check(ctx, once); !errors.Is(err, join.ErrRefused) {
		t.Fatalf("check of a used-up token: %v", err)
	}
	if err := s.Release(ctx, once.ID, "host2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Use(ctx, once, "host3"); err != nil {
		t.Fatalf("use after release: %v", err)
	}

	for _, uses := range []int{1, 3} {
		tok, _, err := s.Create(ctx, join.TokenOptions{TTL: time.Hour, Uses: uses})
		if err != nil {
			t.Fatal(err)
		}
		const racers = 12
		var wg sync.WaitGroup
		var won, refused atomic.Int32
		start := make(chan struct{})
		for i := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := s.Use(ctx, tok, fmt.Sprintf("host%d", i))
				switch {
				case err == nil:
					won.Add(1)
				case errors.Is(err, join.ErrRefused):
					refused.Add(1)
				default:
					t.Errorf("racer %d: %v", i, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if won.Load() != int32(uses) || refused.Load() != racers-int32(uses) {
			t.Errorf("%d racers for a %d-use token: %d won, %d refused", racers, uses, won.Load(), refused.Load())
		}
		list, _ := s.List(ctx)
		for _, i := range list {
			if i.ID == tok.ID && (i.Used != uses || len(i.UsedBy) != uses) {
				t.Errorf("record after the race: %+v", i)
			}
		}
	}
}
