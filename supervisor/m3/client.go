package m3

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Error kinds; test with errors.Is.
var (
	// ErrNotFound: the coordinator answered 404.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: the coordinator answered 409 (placement or
	// namespace already exists).
	ErrAlreadyExists = errors.New("already exists")
	// ErrUnsupported: the operation is not possible with M3 v1.5.0.
	ErrUnsupported = errors.New("unsupported by m3 v1.5.0")
)

// Coordinator API paths (M3 v1.5.0).
const (
	pathHealth          = "/health"
	pathReady           = "/ready"
	pathPlacement       = "/api/v1/services/m3db/placement"
	pathPlacementInit   = "/api/v1/services/m3db/placement/init"
	pathNamespace       = "/api/v1/services/m3db/namespace"
	pathNamespaceReady  = "/api/v1/services/m3db/namespace/ready"
	pathJSONWrite       = "/api/v1/json/write"
	pathQueryRange      = "/api/v1/query_range"
	headerEnvironment   = "Cluster-Environment-Name"
	headerZone          = "Cluster-Zone-Name"
	maxErrorBodyExcerpt = 512
	maxResponseBody     = 64 << 20
)

// Client talks to one m3coordinator's HTTP API. The zero Env and Zone mean
// DefaultEnv and DefaultZone; a nil HTTP means http.DefaultClient. Both
// headers are sent on every placement and namespace call, so a coordinator
// whose own config says another env still acts on ours.
type Client struct {
	BaseURL string // e.g. http://127.0.0.1:7201
	Env     string
	Zone    string
	HTTP    *http.Client
	// Endpoint, when set, names the coordinator's base URL before every
	// request and BaseURL is not used: a host that runs no coordinator
	// talks to a peer's, whichever is registered now.
	Endpoint func(ctx context.Context) (string, error)
}

// Base is the coordinator base URL the next request goes to.
func (c *Client) Base(ctx context.Context) (string, error) {
	if c.Endpoint == nil {
		return c.BaseURL, nil
	}
	u, err := c.Endpoint(ctx)
	if err != nil {
		return "", fmt.Errorf("find a coordinator: %w", err)
	}
	return u, nil
}

// APIError is a non-2xx answer from M3. Its text is
// "METHOD PATH: STATUS: BODY-EXCERPT".
type APIError struct {
	Method     string
	Path       string
	StatusCode int
	Status     string // e.g. "400 Bad Request"
	Body       string // excerpt, whitespace-trimmed
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s: %s: %s", e.Method, e.Path, e.Status, e.Body)
}

// Is maps status codes to the package's error kinds.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrAlreadyExists:
		return e.StatusCode == http.StatusConflict
	}
	return false
}

// transient reports whether retrying the same call later may succeed: the
// coordinator was unreachable or answered 5xx. Context errors are not
// transient: the caller gave up.
func transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.StatusCode >= 500
	}
	return true // transport error
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func (c *Client) env() string {
	if c.Env == "" {
		return DefaultEnv
	}
	return c.Env
}

func (c *Client) zone() string {
	if c.Zone == "" {
		return DefaultZone
	}
	return c.Zone
}

// do sends one request. A non-nil in is sent as JSON. A non-nil out
// receives the JSON answer of a 2xx. topology adds the env/zone headers.
func (c *Client) do(ctx context.Context, method, path string, query string, in, out any, topology bool) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	base, err := c.Base(ctx)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	url := strings.TrimRight(base, "/") + path
	if query != "" {
		url += "?" + query
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if topology {
		req.Header.Set(headerEnvironment, c.env())
		req.Header.Set(headerZone, c.zone())
	}
	return doRequest(c.httpClient(), req, path, out)
}

// doRequest runs req and decodes a 2xx JSON answer into out (if non-nil).
func doRequest(hc *http.Client, req *http.Request, path string, out any) error {
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyExcerpt))
		return &APIError{
			Method:     req.Method,
			Path:       path,
			StatusCode: resp.StatusCode,
			Status:     resp.Status,
			Body:       strings.TrimSpace(string(excerpt)),
		}
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBody)).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", req.Method, path, err)
	}
	return nil
}

// CoordinatorHealthy returns nil when GET /health answers 2xx.
func (c *Client) CoordinatorHealthy(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, pathHealth, "", nil, nil, false)
}

// CoordinatorWritable asks m3coordinator's GET /ready: nil when it knows at
// least one namespace and can write to every one. A restarted coordinator
// answers /health before its M3DB session can write.
func (c *Client) CoordinatorWritable(ctx context.Context) error {
	var r struct {
		ReadyWrites    []json.RawMessage `json:"readyWrites"`
		NotReadyWrites []json.RawMessage `json:"notReadyWrites"`
	}
	if err := c.do(ctx, http.MethodGet, pathReady, "", nil, &r, false); err != nil {
		return fmt.Errorf("coordinator ready: %w", err)
	}
	if len(r.ReadyWrites) == 0 || len(r.NotReadyWrites) > 0 {
		return fmt.Errorf("coordinator ready: %d namespace(s) writable, %d not", len(r.ReadyWrites), len(r.NotReadyWrites))
	}
	return nil
}
