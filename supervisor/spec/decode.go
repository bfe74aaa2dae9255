package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// DecodeStrict decodes YAML or JSON into v (a pointer to a struct with json
// tags), refusing unknown fields. Every error names the field's path, e.g.
// `m3.namespaces[0].retention: invalid duration "2d"` or
// `unknown field "m3.numShard"`.
func DecodeStrict(data []byte, v any) error {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	var tree any
	if err := json.Unmarshal(js, &tree); err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	var errs []error
	unknownFields("", tree, reflect.TypeOf(v).Elem(), &errs)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fmt.Errorf("%s: cannot use a JSON %s as %s", te.Field, te.Value, te.Type)
		}
		return err
	}
	return nil
}

// unknownFields walks a decoded JSON tree against a struct type's json tags.
func unknownFields(path string, node any, t reflect.Type, errs *[]error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n := node.(type) {
	case map[string]any:
		if t.Kind() == reflect.Map {
			for k, v := range n {
				unknownFields(join(path, k), v, t.Elem(), errs)
			}
			return
		}
		if t.Kind() != reflect.Struct {
			return // a type error; the decoder reports it with its path
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(n))
		for k := range n {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := fields[k]
			if !ok {
				msg := fmt.Sprintf("unknown field %q", join(path, k))
				for name := range fields {
					if strings.EqualFold(name, k) {
						msg += fmt.Sprintf(" (did you mean %q?)", join(path, name))
					}
				}
				*errs = append(*errs, errors.New(msg))
				continue
			}
			unknownFields(join(path, k), n[k], ft, errs)
		}
	case []any:
		if t.Kind() != reflect.Slice {
			return
		}
		for i, v := range n {
			unknownFields(fmt.Sprintf("%s[%d]", path, i), v, t.Elem(), errs)
		}
	}
}

func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := strings.Split(f.Tag.Get("json"), ",")[0]
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}
