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

// Tokens manages join tokens (multi-host mode); the daemon implements it.
type Tokens interface {
	CreateToken(ctx context.Context, ttl time.Duration, description string) (string, join.TokenInfo, error)
	ListTokens(ctx context.Context) ([]join.TokenInfo, error)
	RevokeToken(ctx context.Context, id string) error
}

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	TTL         string `json:"ttl,omitempty"` // Go duration; empty: until revoked
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
		var req TokenRequest
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err == nil && len(body) > 0 {
			err = json.Unmarshal(body, &req)
		}
		var ttl time.Duration
		if err == nil && req.TTL != "" {
			ttl, err = time.ParseDuration(req.TTL)
		}
		if err != nil {
			writeError(w, fmt.Errorf("%w: token request: %w", ErrInvalid, err))
			return
		}
		tok, info, err := t.CreateToken(r.Context(), ttl, req.Description)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, TokenCreated{Token: tok, Info: info})
	})
	mux.HandleFunc("GET /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		list, err := t.ListTokens(r.Context())
		if err != nil {
			writeError(w, err)
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
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// CreateToken asks the daemon for a join token valid for ttl (zero: until
// revoked).
func (c *Client) CreateToken(ctx context.Context, ttl time.Duration, description string) (TokenCreated, error) {
	var out TokenCreated
	req := TokenRequest{Description: description}
	if ttl > 0 {
		req.TTL = ttl.String()
	}
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
