package join_test

import (
	"errors"
	"fmt"
	"strings"
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

	forever, info, err := s.Create(ctx, 0, "no expiry")
	if err != nil {
		t.Fatal(err)
	}
	if !info.Expires.IsZero() || info.Description != "no expiry" || forever.CAHash != hash {
		t.Errorf("info %+v", info)
	}
	if err := forever.Validate(); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	hourly, info2, err := s.Create(ctx, time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	if !info2.Expires.Equal(clk.Now().Add(time.Hour)) {
		t.Errorf("expires %v", info2.Expires)
	}

	// etcd holds the secret's hash, never the secret.
	resp, err := e.Client().Get(ctx, join.TokenPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Value), forever.Secret) || strings.Contains(string(kv.Value), hourly.Secret) {
			t.Fatalf("%s stores a secret: %s", kv.Key, kv.Value)
		}
	}

	list, err := s.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != forever.ID || list[1].ID != hourly.ID {
		t.Fatalf("List = %+v, %v", list, err)
	}

	for _, tok := range []join.Token{forever, hourly} {
		if _, err := s.Check(ctx, tok); err != nil {
			t.Errorf("Check(%s): %v", tok, err)
		}
	}
	wrong := hourly
	wrong.Secret = forever.Secret
	otherCA := hourly
	otherCA.CAHash = strings.Repeat("f", 64)
	for name, tok := range map[string]join.Token{"wrong secret": wrong, "other CA": otherCA} {
		if _, err := s.Check(ctx, tok); !errors.Is(err, join.ErrRefused) {
			t.Errorf("%s: %v, want ErrRefused", name, err)
		}
	}

	clk.Add(time.Hour)
	if _, err := s.Check(ctx, hourly); !errors.Is(err, join.ErrRefused) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired: %v", err)
	}
	if _, err := s.Check(ctx, forever); err != nil {
		t.Errorf("no-expiry token after an hour: %v", err)
	}

	if err := s.Revoke(ctx, forever.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Check(ctx, forever); !errors.Is(err, join.ErrRefused) {
		t.Errorf("revoked: %v", err)
	}
	if err := s.Revoke(ctx, forever.ID); !errors.Is(err, join.ErrTokenNotFound) {
		t.Errorf("revoke twice: %v", err)
	}
	if err := s.Revoke(ctx, "../x"); !errors.Is(err, join.ErrInvalidToken) {
		t.Errorf("revoke bad id: %v", err)
	}
	if _, _, err := s.Create(ctx, -time.Second, ""); err == nil {
		t.Error("negative TTL accepted")
	}
}
