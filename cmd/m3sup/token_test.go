package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestTokenCreateRefusesBadOptions: `token create` refuses a TTL that is
// not positive (finding 6: `--ttl -5s` made a token that never expired),
// one beyond the maximum and bad use counts with exit status 2 and a
// message naming the flag, before it reaches any daemon (the socket here
// does not exist).
func TestTokenCreateRefusesBadOptions(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "none.sock")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--ttl", "-5s"}, "ttl -5s: must be positive"},
		{[]string{"--ttl", "0"}, "ttl 0s: must be positive"},
		{[]string{"--ttl", "721h"}, "ttl 721h0m0s: at most 720h0m0s"},
		{[]string{"--uses", "0"}, "uses"},
		{[]string{"--uses", "5000"}, "uses 5000"},
		{[]string{"--uses", "3", "--reusable"}, "uses 3 with reusable"},
	} {
		out, code := m3supRun(t, nil, append(append([]string{"token", "create"}, tt.args...), "--socket", socket)...)
		if code != 2 || !strings.Contains(out, tt.want) {
			t.Errorf("token create %v: exit %d, output %q; want 2 and %q", tt.args, code, out, tt.want)
		}
	}
}
