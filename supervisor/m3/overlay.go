package m3

import (
	"fmt"

	yaml "go.yaml.in/yaml/v2"
)

// Overlay deep-merges overrides into a rendered M3 config: maps merge key by
// key, anything else (scalars, lists) replaces. It lets the desired state
// carry M3 settings m3sup does not model. Keys that M3's strict loader does
// not know make the process exit at start, where the agent's crash-loop
// handling and the log tail show why.
func Overlay(base []byte, overrides map[string]any) ([]byte, error) {
	if len(overrides) == 0 {
		return base, nil
	}
	var doc yaml.MapSlice
	if err := yaml.Unmarshal(base, &doc); err != nil {
		return nil, fmt.Errorf("overlay: parse rendered config: %w", err)
	}
	merged := mergeSlice(doc, overrides)
	out, err := yaml.Marshal(merged)
	if err != nil {
		return nil, fmt.Errorf("overlay: encode config: %w", err)
	}
	return out, nil
}

// mergeSlice keeps base's key order (stable output, stable hashes) and
// appends new keys in sorted order.
func mergeSlice(base yaml.MapSlice, over map[string]any) yaml.MapSlice {
	out := make(yaml.MapSlice, 0, len(base)+len(over))
	seen := map[string]bool{}
	for _, item := range base {
		k := fmt.Sprint(item.Key)
		if ov, ok := over[k]; ok {
			seen[k] = true
			item.Value = mergeValue(item.Value, ov)
		}
		out = append(out, item)
	}
	for _, k := range sortedKeys(over) {
		if !seen[k] {
			out = append(out, yaml.MapItem{Key: k, Value: mergeValue(nil, over[k])})
		}
	}
	return out
}

func mergeValue(base, over any) any {
	om, ok := asStringMap(over)
	if !ok {
		return over
	}
	if bm, ok := base.(yaml.MapSlice); ok {
		return mergeSlice(bm, om)
	}
	return mergeSlice(nil, om)
}

func asStringMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, v := range m {
			out[fmt.Sprint(k)] = v
		}
		return out, true
	}
	return nil, false
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}
