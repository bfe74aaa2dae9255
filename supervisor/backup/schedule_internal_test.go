package backup

import (
	"testing"
	"time"
)

func TestNextDelay(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		newest time.Time
		want   time.Duration
	}{
		{"no backup yet", time.Time{}, 0},
		{"newest is overdue", now.Add(-7 * time.Hour), 0},
		{"newest is recent", now.Add(-2 * time.Hour), 4 * time.Hour},
		{"newest is just taken", now, 6 * time.Hour},
		{"newest in the future (clock went back)", now.Add(48 * time.Hour), 6 * time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := nextDelay(tc.newest, now, 6*time.Hour); got != tc.want {
				t.Fatalf("nextDelay = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDecodeProtoRejectsText(t *testing.T) {
	if _, ok := decodeProto([]byte("{\"not\": \"protobuf\"}"), 0); ok {
		t.Fatal("JSON text decoded as a protobuf message")
	}
}
