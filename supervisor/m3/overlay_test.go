package m3

import (
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v2"
)

func TestOverlay(t *testing.T) {
	base := []byte("db:\n  logging:\n    level: info\n  listenAddress: 0.0.0.0:9000\nzeta: 1\n")
	out, err := Overlay(base, map[string]any{
		"db":    map[string]any{"logging": map[string]any{"level": "debug"}, "extra": []any{1, 2}},
		"alpha": "new",
	})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	db := got["db"].(map[any]any)
	if db["logging"].(map[any]any)["level"] != "debug" {
		t.Fatalf("level not overridden:\n%s", out)
	}
	if db["listenAddress"] != "0.0.0.0:9000" {
		t.Fatalf("sibling key lost:\n%s", out)
	}
	if got["alpha"] != "new" || got["zeta"] != 1 {
		t.Fatalf("top-level keys wrong:\n%s", out)
	}
	// Base order is kept, new keys come last: output is stable.
	if !strings.HasPrefix(string(out), "db:") || strings.Index(string(out), "alpha") < strings.Index(string(out), "zeta") {
		t.Fatalf("order not stable:\n%s", out)
	}
	again, _ := Overlay(base, map[string]any{"alpha": "new", "db": map[string]any{"extra": []any{1, 2}, "logging": map[string]any{"level": "debug"}}})
	if string(again) != string(out) {
		t.Fatal("same overrides gave different bytes")
	}
	same, _ := Overlay(base, nil)
	if string(same) != string(base) {
		t.Fatal("no overrides changed the config")
	}
}
