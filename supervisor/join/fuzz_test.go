package join_test

import (
	"bytes"
	"encoding/json"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/m3sup/m3sup/supervisor/join"
)

// FuzzParseToken: any string either parses into a token that validates
// and encodes back to the same text (trimmed), or fails with
// ErrInvalidToken; never a panic.
func FuzzParseToken(f *testing.F) {
	good := "K10" + hash + "::abcdef." + strings.Repeat("s", 32)
	for _, s := range []string{
		good, " " + good + "\n", "", "K10", "K10::", "K10" + hash + "::", "K10" + hash + "::abcdef",
		"K10" + hash + "::abcdef.", "K10" + hash + "::ABCDEF." + strings.Repeat("s", 32),
		"abcdef." + strings.Repeat("s", 32), "K10" + strings.ToUpper(hash) + "::abcdef." + strings.Repeat("s", 32),
		"K10" + hash + "::abc.def." + strings.Repeat("s", 32), "K10" + hash + ":::abcdef." + strings.Repeat("s", 32),
		"K10\x00::\xff.\u00e9",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := join.ParseToken(s)
		if err != nil {
			return
		}
		if err := tok.Validate(); err != nil {
			t.Fatalf("ParseToken(%q) = %+v that does not validate: %v", s, tok, err)
		}
		if enc := tok.Encode(); enc != strings.TrimSpace(s) {
			t.Fatalf("ParseToken(%q).Encode() = %q", s, enc)
		}
		// The secret may equal any other part by chance (all zeros): what
		// String shows must be the redacted form, exactly.
		if got, want := tok.String(), "K10"+tok.CAHash+"::"+tok.ID+".<redacted>"; got != want {
			t.Fatalf("String() = %q, want %q", got, want)
		}
	})
}

// FuzzDecodeRequest: any body either decodes strictly into a Request that
// survives an encode/decode round trip, or is refused; Validate never
// panics, and a valid request's etcd URLs are on advertised hosts.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"nodeName":"node-2","advertise":["10.0.0.2"],"wantVoter":true,"peerURL":"https://10.0.0.2:2380","clientURL":"https://10.0.0.2:2379"}`,
		`{"nodeName":"n","advertise":["n.example"]}`,
		`{"nodeName":"n","advertise":["8.8.8.8","www.google.com"]}`,
		`{"nodeName":"n","advertise":["10.0.0.2"],"isAdmin":true}`,
		`{"nodeName":"n"}garbage`, `{"nodeName":"n"}{"nodeName":"m"}`, `{}`, `null`, `[]`, `"x"`, ``, `{`,
		`{"nodeName":"n","advertise":null,"wantVoter":"yes"}`, `{"NODENAME":"n"}`,
		`{"nodeName":"n","advertise":["::ffff:10.0.0.2"],"wantVoter":true,"peerURL":"https://[::ffff:10.0.0.2]:2380","clientURL":"https://user@10.0.0.2:1/x?y"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := join.DecodeRequest(bytes.NewReader(b))
		if err != nil {
			return
		}
		enc, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := join.DecodeRequest(bytes.NewReader(enc))
		if err != nil || !reflect.DeepEqual(normalise(again), normalise(req)) {
			t.Fatalf("round trip of %q: %+v, %v (from %+v)", enc, again, err, req)
		}
		if req.Validate() != nil || !req.WantVoter {
			return
		}
		for _, s := range []string{req.PeerURL, req.ClientURL} {
			u, err := url.Parse(s)
			if err != nil || u.Scheme != "https" || !slices.Contains(req.Advertise, u.Hostname()) {
				t.Fatalf("valid request with etcd URL %q off its advertised hosts %v", s, req.Advertise)
			}
		}
	})
}

func normalise(r join.Request) join.Request {
	if len(r.Advertise) == 0 {
		r.Advertise = nil
	}
	return r
}
