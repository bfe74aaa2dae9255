package api_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/m3sup/m3sup/supervisor/api"
	"github.com/m3sup/m3sup/supervisor/join"
)

// fakeTokens makes tokens; it records what it was asked for.
type fakeTokens struct {
	got []join.TokenOptions
}

func (f *fakeTokens) CreateToken(_ context.Context, o join.TokenOptions) (string, join.TokenInfo, error) {
	f.got = append(f.got, o)
	return "K10x", join.TokenInfo{ID: "abcdef", Uses: o.Uses, Voter: o.Voter}, nil
}
func (f *fakeTokens) ListTokens(context.Context) ([]join.TokenInfo, error) { return nil, nil }
func (f *fakeTokens) RevokeToken(context.Context, string) error            { return nil }

// TestCreateTokenRequest: the options reach the daemon as given; a TTL
// that is not positive (finding 6: the client used to drop a negative TTL,
// which made a token that never expired), a missing TTL, unknown fields
// and trailing data are refused as invalid and reach nothing.
func TestCreateTokenRequest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := &fakeTokens{}
	socket := serve(t, api.Handlers{Tokens: f})
	c := api.NewClient(socket)

	res, err := c.CreateToken(ctx, join.TokenOptions{TTL: time.Hour, Uses: 3, Voter: true, Description: "fleet"})
	if err != nil || res.Token != "K10x" {
		t.Fatalf("CreateToken: %+v, %v", res, err)
	}
	if len(f.got) != 1 || f.got[0] != (join.TokenOptions{TTL: time.Hour, Uses: 3, Voter: true, Description: "fleet"}) {
		t.Fatalf("daemon got %+v", f.got)
	}
	for _, o := range []join.TokenOptions{{TTL: -5 * time.Second}, {}, {TTL: 31 * 24 * time.Hour}, {TTL: time.Hour, Uses: -2}} {
		if _, err := c.CreateToken(ctx, o); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "ttl") && !strings.Contains(err.Error(), "uses") {
			t.Errorf("CreateToken(%+v) = %v, want invalid naming the field", o, err)
		}
	}

	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	for body, want := range map[string]string{
		`{"ttl":"1h","admin":true}`: `unknown field`,
		`{"ttl":"1h"} {"ttl":"2h"}`: "trailing data",
		`{}`:                        "ttl: required",
		`{"ttl":"soon"}`:            "ttl",
		``:                          "token request",
	} {
		resp, err := hc.Post("http://m3sup/v1/tokens", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), want) {
			t.Errorf("POST %q: %s %s, want 400 saying %q", body, resp.Status, b, want)
		}
	}
	if len(f.got) != 1 {
		t.Fatalf("refused requests reached the daemon: %+v", f.got)
	}
}

// TestTokenErrorKinds: a host that cannot issue tokens (a
// join.TokenService not enabled) answers every token call with a conflict
// that says who can; options the token store refuses are invalid.
func TestTokenErrorKinds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := api.NewClient(serve(t, api.Handlers{Tokens: &join.TokenService{}}))
	_, err := c.CreateToken(ctx, join.TokenOptions{TTL: time.Hour})
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "holds the cluster CA") {
		t.Errorf("CreateToken without the CA: %v, want a conflict", err)
	}
	if _, err := c.ListTokens(ctx); !errors.Is(err, api.ErrConflict) {
		t.Errorf("ListTokens without the CA: %v, want a conflict", err)
	}
	if err := c.RevokeToken(ctx, "abcdef"); !errors.Is(err, api.ErrConflict) {
		t.Errorf("RevokeToken without the CA: %v, want a conflict", err)
	}

	c = api.NewClient(serve(t, api.Handlers{Tokens: &refusingTokens{}}))
	if _, err := c.CreateToken(ctx, join.TokenOptions{TTL: time.Hour}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("CreateToken refused by the store: %v, want invalid", err)
	}
}

// refusingTokens refuses every token's options, as join.Tokens.Create does
// bad ones.
type refusingTokens struct{ fakeTokens }

func (*refusingTokens) CreateToken(context.Context, join.TokenOptions) (string, join.TokenInfo, error) {
	return "", join.TokenInfo{}, fmt.Errorf("%w: uses 0: want 1 to 100", join.ErrInvalidTokenOptions)
}
