package m3

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

type jsonWriteRequest struct {
	Tags      map[string]string `json:"tags"`
	Timestamp string            `json:"timestamp"`
	Value     float64           `json:"value"`
}

// WriteJSON writes one point through POST /api/v1/json/write; name becomes
// the __name__ tag. M3 keeps millisecond precision. It answers 500 for
// namespaces that are not READY yet.
func (c *Client) WriteJSON(ctx context.Context, name string, tags map[string]string, ts time.Time, v float64) error {
	all := make(map[string]string, len(tags)+1)
	for k, val := range tags {
		all[k] = val
	}
	if name != "" {
		all["__name__"] = name
	}
	if len(all) == 0 {
		return fmt.Errorf("POST %s: a series needs a name or tags", pathJSONWrite)
	}
	req := jsonWriteRequest{Tags: all, Timestamp: ts.UTC().Format(time.RFC3339Nano), Value: v}
	return c.do(ctx, http.MethodPost, pathJSONWrite, "", req, nil, false)
}

// Point is one sample.
type Point struct {
	T time.Time
	V float64
}

// Series is one labelled series of a range query.
type Series struct {
	Metric map[string]string
	Points []Point
}

// QueryResult is a Prometheus-style range query answer.
type QueryResult struct {
	ResultType string // "matrix" for range queries
	Series     []Series
}

type promResponse struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string    `json:"metric"`
			Values [][2]json.RawMessage `json:"values"`
		} `json:"result"`
	} `json:"data"`
}

// QueryRange runs a PromQL range query (GET /api/v1/query_range).
func (c *Client) QueryRange(ctx context.Context, query string, start, end time.Time, step time.Duration) (QueryResult, error) {
	if step <= 0 {
		return QueryResult{}, fmt.Errorf("GET %s: step must be positive", pathQueryRange)
	}
	q := url.Values{}
	q.Set("query", query)
	q.Set("start", start.UTC().Format(time.RFC3339Nano))
	q.Set("end", end.UTC().Format(time.RFC3339Nano))
	q.Set("step", step.String())
	var resp promResponse
	if err := c.do(ctx, http.MethodGet, pathQueryRange, q.Encode(), nil, &resp, false); err != nil {
		return QueryResult{}, err
	}
	if resp.Status != "success" {
		return QueryResult{}, fmt.Errorf("GET %s: status %q: %s", pathQueryRange, resp.Status, resp.Error)
	}
	out := QueryResult{ResultType: resp.Data.ResultType}
	for _, r := range resp.Data.Result {
		s := Series{Metric: r.Metric, Points: make([]Point, 0, len(r.Values))}
		for _, pair := range r.Values {
			p, err := parsePromPoint(pair)
			if err != nil {
				return QueryResult{}, fmt.Errorf("GET %s: %w", pathQueryRange, err)
			}
			s.Points = append(s.Points, p)
		}
		out.Series = append(out.Series, s)
	}
	return out, nil
}

// parsePromPoint decodes [<unix seconds as number>, "<value as string>"].
func parsePromPoint(pair [2]json.RawMessage) (Point, error) {
	var secs float64
	if err := json.Unmarshal(pair[0], &secs); err != nil {
		return Point{}, fmt.Errorf("sample time %s: %w", pair[0], err)
	}
	var vs string
	if err := json.Unmarshal(pair[1], &vs); err != nil {
		return Point{}, fmt.Errorf("sample value %s: %w", pair[1], err)
	}
	v, err := strconv.ParseFloat(vs, 64)
	if err != nil {
		return Point{}, fmt.Errorf("sample value %q: %w", vs, err)
	}
	ms := int64(math.Round(secs * 1000))
	return Point{T: time.UnixMilli(ms).UTC(), V: v}, nil
}

// Health is a dbnode's GET /health answer. A node that is not in the
// placement also says bootstrapped: pair it with the placement's shard
// states.
type Health struct {
	OK           bool   `json:"ok"`
	Status       string `json:"status"`
	Bootstrapped bool   `json:"bootstrapped"`
}

// NodeHealth reads GET <nodeHTTPURL>/health from a dbnode's node HTTP port
// (9002 by default). A nil hc means http.DefaultClient.
func NodeHealth(ctx context.Context, hc *http.Client, nodeHTTPURL string) (Health, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	u := strings.TrimRight(nodeHTTPURL, "/") + "/health"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Health{}, fmt.Errorf("GET %s: %w", u, err)
	}
	var h Health
	if err := doRequest(hc, req, u, &h); err != nil {
		return Health{}, err
	}
	return h, nil
}
