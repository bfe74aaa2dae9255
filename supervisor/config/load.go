package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	uberconfig "go.uber.org/config"
	yaml "gopkg.in/yaml.v2"

	"github.com/m3sup/m3sup/internal/regularfile"
)

// Load returns Default() with each file applied in order, later files
// overriding earlier ones key by key (lists are replaced whole; an explicit
// null restores the default), then Validate. ${VAR} and ${VAR:default} in the
// files' values are expanded from the environment; write $$ for a literal $.
//
// Expansion happens after the YAML is parsed, inside one scalar value at a
// time, so a variable can never add keys or change the file's structure: a
// value that reads as a number, boolean or null takes that type, anything
// else stays a string, and a variable holding a newline is refused (naming
// the variable and the field). Mapping keys are not expanded.
//
// Only regular files are read: a FIFO, device or directory fails at once.
//
// Each file is checked on its own first, so every problem names its file;
// all problems are reported at once.
func Load(files ...string) (Config, error) {
	return load(os.LookupEnv, files)
}

func load(lookup uberconfig.LookupFunc, files []string) (Config, error) {
	var (
		errs    []error
		sources [][]byte
		setBy   []fileKeys
	)
	for _, name := range files {
		data, err := readFile(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		tree, err := parseFile(name, data, lookup)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		w := walker{file: name, keys: make(map[string]bool)}
		w.walk("", tree, configType)
		if len(w.errs) > 0 {
			errs = append(errs, w.errs...)
			continue
		}
		if tree != nil {
			expanded, err := yaml.Marshal(tree)
			if err != nil {
				errs = append(errs, &FileError{File: name, Err: fmt.Errorf("after expanding environment variables: %w", err)})
				continue
			}
			sources = append(sources, expanded)
		}
		setBy = append(setBy, fileKeys{file: name, keys: w.keys})
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}

	c := base()
	if err := merge(&c, sources); err != nil {
		return Config{}, &FileError{File: strings.Join(files, ","), Err: err}
	}
	c.fillDerived()
	problems := c.validate()
	for _, p := range problems {
		p.File = lastSetter(setBy, p.Path)
	}
	if err := joinFieldErrors(problems); err != nil {
		return Config{}, err
	}
	return c, nil
}

// maxFileSize bounds a config file; real ones are a few KiB, and the YAML
// parser's time grows faster than linearly on some inputs.
const maxFileSize = 1 << 20

func readFile(name string) ([]byte, error) {
	f, err := regularfile.Open(name)
	if err != nil {
		return nil, readError(name, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, readError(name, err)
	}
	if len(data) > maxFileSize {
		return nil, &FileError{File: name, Err: fmt.Errorf("file is larger than %d bytes", maxFileSize)}
	}
	return data, nil
}

func readError(name string, err error) error {
	var nr *regularfile.NotRegularError
	if errors.As(err, &nr) {
		return &FileError{File: name, Err: nr}
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &FileError{File: name, Err: fmt.Errorf("%s: %w", pe.Op, pe.Err)}
	}
	return &FileError{File: name, Err: err}
}

// parseFile checks one file's YAML syntax (with line numbers) and returns
// its tree with environment variables expanded in the values.
func parseFile(name string, data []byte, lookup uberconfig.LookupFunc) (tree interface{}, err error) {
	defer func() {
		if r := recover(); r != nil {
			tree, err = nil, &FileError{File: name, Err: fmt.Errorf("cannot parse YAML: %v", r)}
		}
	}()

	// Syntax errors and duplicate keys, with the file's own line numbers.
	var raw interface{}
	if err := yaml.UnmarshalStrict(data, &raw); err != nil {
		return nil, yamlError(name, err)
	}
	e := expander{file: name, lookup: lookup}
	tree = e.tree("", raw)
	if len(e.errs) > 0 {
		return nil, errors.Join(e.errs...)
	}
	return tree, nil
}

// expander expands ${VAR}, ${VAR:default}, $VAR and $$ inside the string
// values of a parsed YAML tree, the syntax go.uber.org/config expands in raw
// text. Working on values after parsing is what keeps a variable from
// injecting YAML.
type expander struct {
	file   string
	lookup uberconfig.LookupFunc
	errs   []error
}

// tree returns a copy of v with its string values expanded. It copies
// rather than changes v: an alias shares its anchor's mapping, and a value
// expanded in place would be expanded again through the alias.
func (e *expander) tree(path string, v interface{}) interface{} {
	switch t := v.(type) {
	case map[interface{}]interface{}:
		out := make(map[interface{}]interface{}, len(t))
		for k, child := range t {
			out[k] = e.tree(joinPath(path, fmt.Sprint(k)), child)
		}
		return out
	case []interface{}:
		out := make([]interface{}, len(t))
		for i, child := range t {
			out[i] = e.tree(fmt.Sprintf("%s[%d]", path, i), child)
		}
		return out
	case string:
		if !strings.Contains(t, "$") {
			return t
		}
		out, ok := e.expand(path, t)
		if !ok {
			return t
		}
		return scalarValue(out)
	}
	return v
}

// expand expands one string value; it reports false after recording an
// error.
func (e *expander) expand(path, s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			i++
			continue
		}
		var token string
		switch next := s[i+1]; {
		case next == '$':
			b.WriteByte('$')
			i += 2
			continue
		case next == '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 { // not an expression: copied as it is
				b.WriteString(s[i:])
				i = len(s)
				continue
			}
			token = s[i+2 : i+2+end]
			i += end + 3
		case isNameStart(next):
			j := i + 2
			for j < len(s) && isNameChar(s[j]) {
				j++
			}
			token = s[i+1 : j]
			i = j
		default:
			b.WriteByte(c)
			i++
			continue
		}
		val, err := e.value(token)
		if err != nil {
			e.errs = append(e.errs, &FileError{File: e.file, Err: err})
			return "", false
		}
		if strings.ContainsAny(val, "\n\r") {
			key, _, _ := strings.Cut(token, ":")
			e.errs = append(e.errs, &FieldError{File: e.file, Path: path,
				Msg: fmt.Sprintf("environment variable %s holds a line break; a config value from the environment must be one line", key)})
			return "", false
		}
		b.WriteString(val)
	}
	return b.String(), true
}

// value resolves one ${KEY} or ${KEY:default} the way go.uber.org/config
// does: the variable if set, else the default; "" as the default means an
// empty value, and no default is an error.
func (e *expander) value(token string) (string, error) {
	key, def, hasDef := strings.Cut(token, ":")
	if v, ok := e.lookup(key); ok {
		return v, nil
	}
	switch {
	case !hasDef || def == "":
		return "", fmt.Errorf("environment variable %s is not set and ${%s} has no default (write ${%s:\"\"} for an empty one)", key, key, key)
	case def == `""`:
		return "", nil
	}
	return def, nil
}

func isNameStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isNameChar(c byte) bool { return isNameStart(c) || c >= '0' && c <= '9' }

// scalarValue types an expanded value the way YAML would type it as a
// plain scalar (so ${SHARDS:64} is a number), but only ever as a scalar:
// text that YAML would read as a mapping, a list or anything else stays the
// string it is.
func scalarValue(s string) interface{} {
	if s == "" {
		return nil // as the raw-text expansion did: "key: " is null
	}
	var v interface{}
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		return s
	}
	switch v.(type) {
	case int, int64, uint64, float64, bool:
		return v
	case nil:
		switch strings.TrimSpace(s) {
		case "~", "null", "Null", "NULL":
			return nil
		}
	}
	return s
}

var (
	yamlLineRE  = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	envUnsetRE  = regexp.MustCompile(`default is empty for "([^"]*)" \(use "" for empty string\)`)
	uberPrefixs = []string{
		"couldn't merge YAML sources: ",
		"couldn't decode source: ",
		"couldn't expand environment: ",
		"couldn't decode merged YAML: ",
	}
)

// yamlError turns a yaml.v2 error into FileErrors with line numbers.
func yamlError(name string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		errs := make([]error, 0, len(te.Errors))
		for _, msg := range te.Errors {
			errs = append(errs, lineError(name, msg))
		}
		return errors.Join(errs...)
	}
	return lineError(name, err.Error())
}

func lineError(name, msg string) *FileError {
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil {
			return &FileError{File: name, Line: n, Err: errors.New(m[2])}
		}
	}
	return &FileError{File: name, Err: errors.New(strings.TrimPrefix(msg, "yaml: "))}
}

// uberError rewords go.uber.org/config's errors, which have no type to match.
func uberError(err error) error {
	msg := err.Error()
	if m := envUnsetRE.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("environment variable %s is not set and ${%s} has no default (write ${%s:\"\"} for an empty one)", m[1], m[1], m[1])
	}
	for _, p := range uberPrefixs {
		if strings.HasPrefix(msg, p) {
			return fmt.Errorf("after expanding environment variables: %s", strings.TrimPrefix(msg, p))
		}
	}
	return errors.New(msg)
}

// merge applies the sources, in order, on top of c.
func merge(c *Config, sources [][]byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("merge files: %v", r)
		}
	}()
	if len(sources) == 0 {
		return nil
	}
	opts := make([]uberconfig.YAMLOption, 0, len(sources))
	for _, src := range sources {
		opts = append(opts, uberconfig.Source(bytes.NewReader(src)))
	}
	// No uberconfig.Expand: the sources are already expanded (parseFile),
	// and expanding raw text is what let a variable inject YAML.
	y, err := uberconfig.NewYAML(opts...)
	if err != nil {
		return uberError(err)
	}
	var tree interface{}
	if err := y.Get(uberconfig.Root).Populate(&tree); err != nil {
		return uberError(err)
	}
	tree = pruneNulls(tree)
	if tree == nil {
		return nil
	}
	// Decode over the defaults: keys absent from the files keep them.
	out, err := yaml.Marshal(tree)
	if err != nil {
		return fmt.Errorf("merge files: %w", err)
	}
	if err := yaml.UnmarshalStrict(out, c); err != nil {
		return fmt.Errorf("merge files: %w", err)
	}
	return nil
}

// pruneNulls drops null mapping values so that they keep the default.
func pruneNulls(v interface{}) interface{} {
	switch t := v.(type) {
	case map[interface{}]interface{}:
		for k, e := range t {
			if e == nil {
				delete(t, k)
				continue
			}
			t[k] = pruneNulls(e)
		}
		if len(t) == 0 {
			return nil
		}
	case []interface{}:
		for i, e := range t {
			t[i] = pruneNulls(e)
		}
	}
	return v
}

// fileKeys records every path one file set.
type fileKeys struct {
	file string
	keys map[string]bool
}

// lastSetter returns the file whose value path has after merging, or "" if
// no file set it. Lists are replaced whole, so a path inside a list belongs to
// the last file that set the list, and only if that file set the path.
func lastSetter(files []fileKeys, path string) string {
	if path == "" {
		return ""
	}
	list := ""
	if i := strings.IndexByte(path, '['); i > 0 {
		list = path[:i]
	}
	for i := len(files) - 1; i >= 0; i-- {
		f := files[i]
		if list != "" && f.keys[list] {
			if f.keys[path] {
				return f.file
			}
			return ""
		}
		if list == "" && f.keys[path] {
			return f.file
		}
	}
	return ""
}

var (
	configType   = reflect.TypeOf(Config{})
	durationType = reflect.TypeOf(Duration(0))
)

// walker checks a decoded YAML tree against the Config type by its yaml
// tags, so that unknown keys and wrong types are reported with full paths.
type walker struct {
	file string
	keys map[string]bool
	errs []error
}

func (w *walker) fail(path, format string, args ...interface{}) {
	w.errs = append(w.errs, &FieldError{File: w.file, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (w *walker) walk(path string, v interface{}, t reflect.Type) {
	if path != "" {
		w.keys[path] = true
	}
	if v == nil {
		return // null keeps the default
	}
	if t == durationType {
		if _, err := parseDuration(v); err != nil {
			w.fail(path, "%s", err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Ptr:
		w.walk(path, v, t.Elem())
	case reflect.Struct:
		m, ok := v.(map[interface{}]interface{})
		if !ok {
			w.fail(path, "cannot use %s as a mapping", describe(v))
			return
		}
		fields := yamlFields(t)
		keys := make([]string, 0, len(m))
		byKey := make(map[string]interface{}, len(m))
		for k, e := range m {
			ks := fmt.Sprint(k)
			keys = append(keys, ks)
			byKey[ks] = e
		}
		sort.Strings(keys)
		for _, k := range keys {
			child := joinPath(path, k)
			f, ok := fields[k]
			if !ok {
				w.errs = append(w.errs, &FieldError{File: w.file, Path: child, Unknown: true, Msg: suggest(path, k, fields)})
				continue
			}
			w.walk(child, byKey[k], f)
		}
	case reflect.Map:
		m, ok := v.(map[interface{}]interface{})
		if !ok || t.Key().Kind() != reflect.String {
			w.fail(path, "cannot use %s as a mapping", describe(v))
			return
		}
		keys := make([]string, 0, len(m))
		byKey := make(map[string]interface{}, len(m))
		for k, e := range m {
			ks := fmt.Sprint(k)
			keys = append(keys, ks)
			byKey[ks] = e
		}
		sort.Strings(keys)
		for _, k := range keys {
			w.walk(joinPath(path, k), byKey[k], t.Elem())
		}
	case reflect.Slice:
		l, ok := v.([]interface{})
		if !ok {
			w.fail(path, "cannot use %s as a list", describe(v))
			return
		}
		for i, e := range l {
			w.walk(fmt.Sprintf("%s[%d]", path, i), e, t.Elem())
		}
	case reflect.String:
		if !isScalar(v) {
			w.fail(path, "cannot use %s as a string", describe(v))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := asInt(v)
		if !ok || reflect.Zero(t).OverflowInt(n) {
			w.fail(path, "cannot use %s as an integer", describe(v))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := asUint(v)
		if !ok || reflect.Zero(t).OverflowUint(n) {
			w.fail(path, "cannot use %s as a non-negative integer", describe(v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			w.fail(path, "cannot use %s as a boolean (true or false)", describe(v))
		}
	default:
		w.fail(path, "unsupported field type %s", t)
	}
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// yamlFields maps a struct's yaml keys to their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	fields := make(map[string]reflect.Type, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		fields[name] = f.Type
	}
	return fields
}

// suggest returns a did-you-mean hint for an unknown key: a sibling key
// differing only in case or by a small edit, or else a key with the same
// name elsewhere in the configuration.
func suggest(parent, key string, siblings map[string]reflect.Type) string {
	lower := strings.ToLower(key)
	best, bestDist := "", math.MaxInt
	for name := range siblings {
		d := editDistance(lower, strings.ToLower(name))
		if d < bestDist || d == bestDist && name < best {
			best, bestDist = name, d
		}
	}
	if best != "" && (bestDist == 0 || bestDist <= 2 && bestDist*3 <= len(key)) {
		return fmt.Sprintf("did you mean %q?", joinPath(parent, best))
	}
	var elsewhere []string
	collectPaths("", configType, func(path, name string) {
		if strings.EqualFold(name, key) && path != joinPath(parent, key) {
			elsewhere = append(elsewhere, path)
		}
	})
	if len(elsewhere) == 1 {
		return fmt.Sprintf("did you mean %q?", elsewhere[0])
	}
	return ""
}

// collectPaths calls fn with every key path in t and the key's own name.
func collectPaths(prefix string, t reflect.Type, fn func(path, name string)) {
	for name, ft := range yamlFields(t) {
		p := joinPath(prefix, name)
		fn(p, name)
		for ft.Kind() == reflect.Ptr || ft.Kind() == reflect.Slice || ft.Kind() == reflect.Map {
			switch ft.Kind() {
			case reflect.Slice:
				p += "[]"
			case reflect.Map:
				p += ".<key>"
			}
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != durationType {
			collectPaths(p, ft, fn)
		}
	}
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func isScalar(v interface{}) bool {
	switch v.(type) {
	case map[interface{}]interface{}, []interface{}:
		return false
	}
	return true
}

func asInt(v interface{}) (int64, bool) {
	switch n := v.(type) {
	case int:
		return int64(n), true
	case int64:
		return n, true
	case uint64:
		if n <= math.MaxInt64 {
			return int64(n), true
		}
	}
	return 0, false
}

func asUint(v interface{}) (uint64, bool) {
	switch n := v.(type) {
	case int:
		if n >= 0 {
			return uint64(n), true
		}
	case int64:
		if n >= 0 {
			return uint64(n), true
		}
	case uint64:
		return n, true
	}
	return 0, false
}

// describe renders a decoded YAML value for an error message.
func describe(v interface{}) string {
	switch t := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(t)
	case map[interface{}]interface{}:
		return "a mapping"
	case []interface{}:
		return "a list"
	}
	return fmt.Sprint(v)
}
