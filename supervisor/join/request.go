package join

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
)

// Request is what a joining host sends.
type Request struct {
	NodeName string `json:"nodeName"`
	// Advertise lists the IPs and DNS names other hosts reach this host by;
	// the issued certificates carry them as SANs. Each must lead back to
	// the address the join request comes from (checkAdvertise).
	Advertise []string `json:"advertise"`
	// WantVoter asks to run an etcd member. The server decides: only a
	// voter token (TokenOptions.Voter) can make one, and only while the
	// cluster has fewer than MaxVoters members.
	WantVoter bool `json:"wantVoter"`
	// PeerURL and ClientURL are the joiner's etcd URLs (https, a host from
	// Advertise); required with WantVoter.
	PeerURL   string `json:"peerURL,omitempty"`
	ClientURL string `json:"clientURL,omitempty"`
}

// maxAdvertise bounds Request.Advertise.
const maxAdvertise = 16

// DecodeRequest reads one join request strictly: a single JSON object of
// Request's fields, no unknown field, nothing after it. The caller bounds
// r's size. It does not Validate.
func DecodeRequest(r io.Reader) (Request, error) {
	var req Request
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return Request{}, fmt.Errorf("decode join request: %w", err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Request{}, errors.New("decode join request: trailing data after the JSON object")
	}
	return req, nil
}

// Validate checks a join request's shape; each error names the field.
func (r Request) Validate() error {
	if !validName(r.NodeName) {
		return fmt.Errorf("nodeName %q: want 1-63 characters [a-z0-9.-], starting with a letter or digit", r.NodeName)
	}
	if len(r.Advertise) == 0 || len(r.Advertise) > maxAdvertise {
		return fmt.Errorf("advertise: want 1 to %d IPs or DNS names, got %d", maxAdvertise, len(r.Advertise))
	}
	for _, h := range r.Advertise {
		if net.ParseIP(h) == nil && !validName(h) {
			return fmt.Errorf("advertise: %q is neither an IP nor a DNS name", h)
		}
	}
	if !r.WantVoter {
		if r.PeerURL != "" || r.ClientURL != "" {
			return errors.New("peerURL, clientURL: only with wantVoter")
		}
		return nil
	}
	for _, f := range []struct{ name, url string }{{"peerURL", r.PeerURL}, {"clientURL", r.ClientURL}} {
		u, err := url.Parse(f.url)
		if err != nil || u.Scheme != "https" || u.Port() == "" || u.Path != "" || u.User != nil || u.RawQuery != "" {
			return fmt.Errorf("%s %q: want https://host:port", f.name, f.url)
		}
		if !slices.Contains(r.Advertise, u.Hostname()) {
			return fmt.Errorf("%s %q: host is not in advertise %v", f.name, f.url, r.Advertise)
		}
	}
	return nil
}

func validName(s string) bool {
	return len(s) > 0 && len(s) <= 63 && only(s, "abcdefghijklmnopqrstuvwxyz0123456789.-") && s[0] != '-' && s[0] != '.'
}

// LookupHost resolves a DNS name to addresses (net.Resolver.LookupHost).
type LookupHost func(ctx context.Context, host string) ([]string, error)

// checkAdvertise is the rule for certificate names: a joiner gets SANs
// only for where it is. Every advertised IP must be the address the
// request comes from (from), and every advertised DNS name must resolve to
// it; a request naming 8.8.8.8 or www.google.com from elsewhere is
// refused, so a token holder cannot get a certificate for another member's
// address or any outside name. The client (Join) dials from its first
// advertised IP so a host with several addresses passes.
func checkAdvertise(ctx context.Context, lookup LookupHost, advertise []string, from netip.Addr) error {
	from = from.Unmap()
	for _, h := range advertise {
		if ip, err := netip.ParseAddr(h); err == nil {
			if ip.Unmap() != from {
				return fmt.Errorf("advertise %s: not the address this join comes from (%s); a host joins from its advertise address", h, from)
			}
			continue
		}
		addrs, err := lookup(ctx, h)
		if err != nil {
			return fmt.Errorf("advertise %s: resolve: %w", h, err)
		}
		if !slices.ContainsFunc(addrs, func(a string) bool {
			ip, err := netip.ParseAddr(a)
			return err == nil && ip.Unmap() == from
		}) {
			return fmt.Errorf("advertise %s: resolves to %v, not to the address this join comes from (%s)", h, addrs, from)
		}
	}
	return nil
}

// certHosts returns the SANs for a joiner: its (checked) advertised hosts,
// and its node name when that is a single DNS label other than localhost
// (a name like "host2" cannot be an outside name; a dotted node name
// becomes a SAN only when it is advertised, and so checked).
func certHosts(req Request) (dns []string, ips []net.IP) {
	hosts := slices.Clone(req.Advertise)
	if !strings.Contains(req.NodeName, ".") && req.NodeName != "localhost" {
		hosts = append(hosts, req.NodeName)
	}
	return splitHosts(hosts)
}

func splitHosts(hosts []string) (dns []string, ips []net.IP) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(ips, func(x net.IP) bool { return x.Equal(ip) }) {
				ips = append(ips, ip)
			}
		} else if !slices.Contains(dns, h) {
			dns = append(dns, h)
		}
	}
	return dns, ips
}

// encodeRequest is the client's side of DecodeRequest.
func encodeRequest(req Request) ([]byte, error) {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(req); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
