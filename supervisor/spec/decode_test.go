package spec

import (
	"strings"
	"testing"
)

func TestDecodeStrict(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string // substrings of the error; none = success
	}{
		{"ok yaml", "m3:\n  numShards: 8\n", nil},
		{"ok json", `{"m3":{"numShards":8}}`, nil},
		{"unknown nested", "m3:\n  numShard: 3\n", []string{`unknown field "m3.numShard"`}},
		{"unknown in list", "m3:\n  namespaces:\n    - name: a\n      retension: 1h\n", []string{`"m3.namespaces[0].retension"`}},
		{"case hint", "m3:\n  numshards: 3\n", []string{`did you mean "m3.numShards"`}},
		{"wrong type", "m3:\n  numShards: many\n", []string{"m3.numShards", "cannot use"}},
		{"bad duration", "m3:\n  namespaces:\n    - name: a\n      retention: 2d\n", []string{"2d", "Go durations"}},
		{"free-form config", "dbnode:\n  config:\n    db: {anything: [1, 2]}\n", nil},
		{"syntax", "m3: [\n", []string{"parse"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Cluster
			err := DecodeStrict([]byte(tc.in), &c)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want an error mentioning %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
