package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/m3sup/m3sup/supervisor/m3"
)

// The m3 package's Client has no placement add or remove yet. These two
// calls speak the coordinator API (M3 v1.5.0) with the client's exported
// settings; they belong in supervisor/m3 as Client.AddInstances and
// Client.RemoveInstance, and move there when the controller is wired.
const pathPlacement = "/api/v1/services/m3db/placement"

// wireInstance is placementpb.Instance; jsonpb accepts proto field names.
type wireInstance struct {
	ID             string `json:"id"`
	IsolationGroup string `json:"isolation_group"`
	Zone           string `json:"zone"`
	Weight         uint32 `json:"weight"`
	Endpoint       string `json:"endpoint"`
	Hostname       string `json:"hostname"`
	Port           uint32 `json:"port"`
}

// addInstance adds one instance (admin.PlacementAddRequest). M3 refuses,
// 400, unless every shard is AVAILABLE.
func addInstance(ctx context.Context, c *m3.Client, in m3.Instance) error {
	zone := in.Zone
	if zone == "" {
		zone = orDefault(c.Zone, m3.DefaultZone)
	}
	weight := in.Weight
	if weight == 0 {
		weight = 100
	}
	req := struct {
		Instances []wireInstance `json:"instances"`
	}{[]wireInstance{{
		ID: in.ID, IsolationGroup: in.IsolationGroup, Zone: zone, Weight: weight,
		Endpoint: in.Endpoint, Hostname: in.Hostname, Port: in.Port,
	}}}
	return send(ctx, c, http.MethodPost, pathPlacement, req)
}

// removeInstance removes one instance; its shards move to the others. M3
// answers 404 when the instance is not in the placement.
func removeInstance(ctx context.Context, c *m3.Client, id string) error {
	return send(ctx, c, http.MethodDelete, pathPlacement+"/"+url.PathEscape(id), nil)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// send makes one placement call with the env/zone headers and turns a
// non-2xx answer into an *m3.APIError, so errors.Is(err, m3.ErrNotFound)
// works as for the m3 package's own calls.
func send(ctx context.Context, c *m3.Client, method, path string, in any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Cluster-Environment-Name", orDefault(c.Env, m3.DefaultEnv))
	req.Header.Set("Cluster-Zone-Name", orDefault(c.Zone, m3.DefaultZone))
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return &m3.APIError{Method: method, Path: path, StatusCode: resp.StatusCode, Status: resp.Status, Body: strings.TrimSpace(string(excerpt))}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<20))
	return nil
}
