package spec

import "testing"

func TestImageRefRE(t *testing.T) {
	for _, tc := range []struct {
		ref string
		ok  bool
	}{
		{"quay.io/m3db/m3dbnode:v1.5.0", true},
		{"127.0.0.1:5000/m3db/m3dbnode:v1.5.0", true},
		{"localhost:5000/m3dbnode:latest", true},
		{"registry.example.com/a/b/c@sha256:" + sixtyFour, true},
		{"quay.io/m3db/m3dbnode:v1.5.0@sha256:" + sixtyFour, true},
		{"m3db/m3dbnode:v1.5.0", false},     // no registry host
		{"quay.io/m3db/m3dbnode", false},    // no tag or digest
		{"quay.io/M3DB/m3dbnode:v1", false}, // uppercase repository
		{"https://quay.io/m3db/m3dbnode:v1", false},
		{"quay.io/m3db/m3dbnode:v1 ", false},
		{"", false},
	} {
		if got := ImageRefRE.MatchString(tc.ref); got != tc.ok {
			t.Errorf("%q: match %v, want %v", tc.ref, got, tc.ok)
		}
	}
}

const sixtyFour = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
