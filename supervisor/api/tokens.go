package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/m3sup/m3sup/supervisor/join"
)

// Tokens manages join tokens (multi-host mode); join.TokenService
// implements it. Its join.ErrNotIssuer is a conflict, and a
// join.ErrInvalidTokenOptions from CreateToken an invalid request.
type Tokens interface {
	CreateToken(ctx context.Context, o join.TokenOptions) (string, join.TokenInfo, error)
	ListTokens(ctx context.Context) ([]join.TokenInfo, error)
	RevokeToken(ctx context.Context, id string) error
}

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	// TTL is a Go duration, required: 0 < TTL <= join.MaxTokenTTL.
	TTL string `json:"ttl"`
	// Uses is how many joins the token admits (zero: one).
	Uses int `json:"uses,omitempty"`
	// Reusable: any number of joins until it expires (instead of Uses).
	Reusable bool `json:"reusable,omitempty"`
	// Voter: the token may make etcd voters, which receive the CA key.
	Voter       bool   `json:"voter,omitempty"`
	Description string `json:"description,omitempty"`
}

// TokenCreated is the answer to POST /v1/tokens: the only time the secret
// is shown.
type TokenCreated struct {
	Token string         `json:"token"`
	Info  join.TokenInfo `json:"info"`
}

func tokenRoutes(mux *http.ServeMux, t Tokens) {
	mux.HandleFunc("POST /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		o, err := decodeTokenRequest(http.MaxBytesReader(w, r.Body, 64<<10))
		if err != nil {
			writeError(w, fmt.Errorf("%w: %w", ErrInvalid, err))
			return
		}
		tok, info, err := t.CreateToken(r.Context(), o)
		if err != nil {
			writeError(w, tokenError(err))
			return
		}
		writeJSON(w, http.StatusCreated, TokenCreated{Token: tok, Info: info})
	})
	mux.HandleFunc("GET /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		list, err := t.ListTokens(r.Context())
		if err != nil {
			writeError(w, tokenError(err))
			return
		}
		if list == nil {
			list = []join.TokenInfo{}
		}
		writeJSON(w, http.StatusOK, list)
	})
	mux.HandleFunc("DELETE /v1/tokens/{id}", func(w http.ResponseWriter, r *http.Request) {
		err := t.RevokeToken(r.Context(), r.PathValue("id"))
		if errors.Is(err, join.ErrTokenNotFound) {
			err = fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		if err != nil {
			writeError(w, tokenError(err))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// tokenError gives join's errors their API kind: options a token cannot
// have are invalid, a host that cannot issue tokens is a conflict.
func tokenError(err error) error {
	switch {
	case errors.Is(err, join.ErrInvalidTokenOptions):
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	case errors.Is(err, join.ErrNotIssuer):
		return fmt.Errorf("%w: %w", ErrConflict, err)
	}
	return err
}

// decodeTokenRequest reads a TokenRequest strictly (no unknown field, no
// trailing data) and checks it.
func decodeTokenRequest(r io.Reader) (join.TokenOptions, error) {
	var req TokenRequest
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return join.TokenOptions{}, fmt.Errorf("token request: %w", err)
	}
	if dec.More() {
		return join.TokenOptions{}, errors.New("token request: trailing data after the JSON object")
	}
	if req.TTL == "" {
		return join.TokenOptions{}, fmt.Errorf("token request: ttl: required (at most %s)", join.MaxTokenTTL)
	}
	ttl, err := time.ParseDuration(req.TTL)
	if err != nil {
		return join.TokenOptions{}, fmt.Errorf("token request: ttl: %w", err)
	}
	o := join.TokenOptions{TTL: ttl, Uses: req.Uses, Reusable: req.Reusable, Voter: req.Voter, Description: req.Description}
	if err := o.Validate(); err != nil {
		return join.TokenOptions{}, fmt.Errorf("token request: %w", err)
	}
	return o, nil
}

// CreateToken asks the daemon for a join token as o says. o.TTL is sent
// whatever its sign, so the daemon refuses a TTL that is not positive
// instead of this client dropping it.
func (c *Client) CreateToken(ctx context.Context, o join.TokenOptions) (TokenCreated, error) {
	var out TokenCreated
	req := TokenRequest{TTL: o.TTL.String(), Uses: o.Uses, Reusable: o.Reusable, Voter: o.Voter, Description: o.Description}
	err := c.do(ctx, http.MethodPost, "/v1/tokens", req, &out)
	return out, err
}

// ListTokens lists the join tokens (never their secrets).
func (c *Client) ListTokens(ctx context.Context) ([]join.TokenInfo, error) {
	var out []join.TokenInfo
	err := c.get(ctx, "/v1/tokens", &out)
	return out, err
}

// RevokeToken deletes a join token by ID.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/tokens/"+id, nil, nil)
}
