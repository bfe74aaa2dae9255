package backup

import (
	"encoding/base64"
	"strconv"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// decodeProto decodes a protobuf message without its schema, the way
// `protoc --decode_raw` does, so a reader of a backup can see M3's
// placement and namespaces without M3's code: field number → value, a
// repeated field as a list. A length-delimited field is shown as a string
// when it is printable UTF-8, as a nested message when it parses as one,
// else as base64. It reports false when b is not a protobuf message.
func decodeProto(b []byte, depth int) (map[string]any, bool) {
	if len(b) == 0 || depth > 16 {
		return nil, false
	}
	out := map[string]any{}
	add := func(num protowire.Number, v any) {
		k := strconv.Itoa(int(num))
		switch cur := out[k].(type) {
		case nil:
			out[k] = v
		case []any:
			out[k] = append(cur, v)
		default:
			out[k] = []any{cur, v}
		}
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, false
			}
			add(num, v)
			b = b[n:]
		case protowire.Fixed32Type:
			v, n := protowire.ConsumeFixed32(b)
			if n < 0 {
				return nil, false
			}
			add(num, v)
			b = b[n:]
		case protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return nil, false
			}
			add(num, v)
			b = b[n:]
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, false
			}
			switch {
			case printable(v):
				add(num, string(v))
			default:
				if m, ok := decodeProto(v, depth+1); ok {
					add(num, m)
				} else {
					add(num, base64.StdEncoding.EncodeToString(v))
				}
			}
			b = b[n:]
		default: // groups are not used by M3
			return nil, false
		}
	}
	return out, true
}

func printable(b []byte) bool {
	if len(b) == 0 || !utf8.Valid(b) {
		return len(b) == 0
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
