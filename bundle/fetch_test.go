package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// fileServer serves fixed files over HTTP and counts requests.
type fileServer struct {
	*httptest.Server
	requests atomic.Int64
	mu       sync.Mutex
	files    map[string][]byte
	// gate, when set, holds each request until it is closed; started is
	// signalled first.
	gate    chan struct{}
	started chan struct{}
}

func newFileServer(t testing.TB, files map[string][]byte) *fileServer {
	t.Helper()
	fs := &fileServer{files: files}
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.requests.Add(1)
		if fs.started != nil {
			select {
			case fs.started <- struct{}{}:
			default:
			}
		}
		if fs.gate != nil {
			<-fs.gate
		}
		fs.mu.Lock()
		b, ok := fs.files[r.URL.Path]
		fs.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, r.URL.Path, time.Time{}, bytes.NewReader(b))
	}))
	t.Cleanup(fs.Close)
	return fs
}

func digestOf(b []byte) Digest {
	sum := sha256.Sum256(b)
	return digestFromSum(sum[:])
}

// testCache opens a cache at <tmp>/data/cache and returns it with <tmp>.
func testCache(t testing.TB, opts Options) (*Cache, string) {
	t.Helper()
	base := t.TempDir()
	c, err := OpenCache(filepath.Join(base, "data", "cache"), opts)
	if err != nil {
		t.Fatal(err)
	}
	return c, base
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func assertEmpty(t testing.TB, dir string) {
	t.Helper()
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("%s is not empty: %v", dir, names)
	}
}

func assertContent(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: content differs (%d bytes, want %d)", path, len(got), len(want))
	}
}

func TestParseDigest(t *testing.T) {
	good := strings.Repeat("ab", 32)
	tests := []struct {
		in   string
		want Digest
		ok   bool
	}{
		{"sha256:" + good, Digest("sha256:" + good), true},
		{"sha256:" + strings.ToUpper(good), Digest("sha256:" + good), true},
		{good, "", false},
		{"sha512:" + good, "", false},
		{"sha256:" + good[:63], "", false},
		{"sha256:" + good[:62] + "zz", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, err := ParseDigest(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseDigest(%q) = %q, %v; want %q, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if tt.ok && got.Hex() != good {
			t.Errorf("Hex() = %q", got.Hex())
		}
	}
	if h := Digest("sha256:xyz").Hex(); h != "" {
		t.Errorf("Hex of invalid digest = %q", h)
	}
}

func TestFetchHTTPThenCacheHit(t *testing.T) {
	payload := bytes.Repeat([]byte("m3 release "), 10000)
	srv := newFileServer(t, map[string][]byte{"/m3_1.5.0_linux_amd64.tar.gz": payload})
	c, _ := testCache(t, Options{})
	src := Source{URL: srv.URL + "/m3_1.5.0_linux_amd64.tar.gz", Checksum: string(digestOf(payload))}

	res, err := c.Fetch(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Downloaded || res.Digest != digestOf(payload) || res.Bytes != int64(len(payload)) {
		t.Fatalf("first fetch = %+v", res)
	}
	if res.Path != filepath.Join(c.Dir(), "sha256", digestOf(payload).Hex()) {
		t.Errorf("path = %s", res.Path)
	}
	assertContent(t, res.Path, payload)
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("first fetch made %d requests, want 1", n)
	}
	assertEmpty(t, filepath.Join(c.Dir(), "tmp"))

	res2, err := c.Fetch(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Downloaded || res2.Path != res.Path || res2.Bytes != res.Bytes {
		t.Errorf("second fetch = %+v", res2)
	}
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("cache hit made %d more requests", n-1)
	}
}

func TestFetchFileURLAndPlainPath(t *testing.T) {
	c, base := testCache(t, Options{})
	for _, tt := range []struct {
		name string
		url  func(path string) string
	}{
		{"file URL", func(p string) string { return "file://" + p }},
		{"plain path", func(p string) string { return p }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			payload := []byte("artifact via " + tt.name)
			p := filepath.Join(base, strings.ReplaceAll(tt.name, " ", "-")+".tar.gz")
			if err := os.WriteFile(p, payload, 0o644); err != nil {
				t.Fatal(err)
			}
			src := Source{URL: tt.url(p), Checksum: string(digestOf(payload))}
			res, err := c.Fetch(context.Background(), src)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Downloaded || res.Digest != digestOf(payload) {
				t.Fatalf("fetch = %+v", res)
			}
			assertContent(t, res.Path, payload)
			if fi, err := os.Lstat(res.Path); err != nil || !fi.Mode().IsRegular() {
				t.Errorf("cached artifact is not a regular file: %v %v", fi, err)
			}
			// The source going away does not matter any more.
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if res, err := c.Fetch(context.Background(), src); err != nil || res.Downloaded {
				t.Errorf("second fetch = %+v, %v", res, err)
			}
		})
	}
}

func TestFetchChecksumsFile(t *testing.T) {
	payload := []byte("the m3 tarball")
	other := []byte("something else")
	sums := fmt.Sprintf("%s  m3_checksums.txt.sig\n%s  m3_1.5.0_linux_amd64.tar.gz\n%s  m3_1.5.0_linux_arm64.tar.gz\n",
		digestOf(other).Hex(), digestOf(payload).Hex(), digestOf(other).Hex())
	srv := newFileServer(t, map[string][]byte{
		"/v1.5.0/m3_1.5.0_linux_amd64.tar.gz": payload,
		"/v1.5.0/m3_1.5.0_checksums.txt":      []byte(sums),
	})
	c, _ := testCache(t, Options{})
	src := Source{
		URL:      srv.URL + "/v1.5.0/m3_1.5.0_linux_amd64.tar.gz",
		Checksum: "file:" + srv.URL + "/v1.5.0/m3_1.5.0_checksums.txt",
	}
	res, err := c.Fetch(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Downloaded || res.Digest != digestOf(payload) {
		t.Fatalf("fetch = %+v", res)
	}
	if n := srv.requests.Load(); n != 2 {
		t.Errorf("made %d requests, want 2 (checksums file and artifact)", n)
	}

	srv.Close() // a second fetch needs no network at all
	res2, err := c.Fetch(context.Background(), src)
	if err != nil {
		t.Fatalf("fetch with the server gone: %v", err)
	}
	if res2.Downloaded || res2.Digest != res.Digest {
		t.Errorf("second fetch = %+v", res2)
	}
}

func TestFetchChecksumsFileWithoutEntry(t *testing.T) {
	payload := []byte("x")
	srv := newFileServer(t, map[string][]byte{
		"/a.tar.gz": payload,
		"/sums.txt": []byte(digestOf(payload).Hex() + "  b.tar.gz\n"),
	})
	c, _ := testCache(t, Options{})
	_, err := c.Fetch(context.Background(), Source{URL: srv.URL + "/a.tar.gz", Checksum: "file:" + srv.URL + "/sums.txt"})
	if !errors.Is(err, ErrNoChecksum) || !strings.Contains(err.Error(), `"a.tar.gz"`) {
		t.Fatalf("err = %v, want ErrNoChecksum naming a.tar.gz", err)
	}
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("made %d requests, want only the checksums file", n)
	}
}

func TestFindChecksum(t *testing.T) {
	h1, h2 := strings.Repeat("1", 64), strings.Repeat("2", 64)
	tests := []struct {
		name, data string
		want       Digest
		wantErr    bool
	}{
		{"goreleaser", h2 + "  other\n" + h1 + "  a.tgz\n", Digest("sha256:" + h1), false},
		{"binary marker", h1 + " *a.tgz\n", Digest("sha256:" + h1), false},
		{"dot slash", h1 + "  ./a.tgz\n", Digest("sha256:" + h1), false},
		{"upper hex", strings.ToUpper(strings.Repeat("a", 64)) + "  a.tgz\n", Digest("sha256:" + strings.Repeat("a", 64)), false},
		{"missing", h1 + "  b.tgz\n", "", true},
		{"conflict", h1 + "  a.tgz\n" + h2 + "  a.tgz\n", "", true},
		{"bad hex", "zz  a.tgz\n", "", true},
		{"prefix is not a match", h1 + "  xa.tgz\n", "", true},
	}
	for _, tt := range tests {
		got, err := findChecksum([]byte(tt.data), "a.tgz")
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("%s: got %q, %v", tt.name, got, err)
		}
	}
}

func TestFetchChecksumMismatch(t *testing.T) {
	payload := []byte("real content")
	srv := newFileServer(t, map[string][]byte{"/a.tar.gz": payload})
	c, _ := testCache(t, Options{})
	want := digestOf([]byte("expected content"))
	url := srv.URL + "/a.tar.gz"
	_, err := c.Fetch(context.Background(), Source{URL: url, Checksum: string(want)})
	if !errors.Is(err, ErrChecksumMismatch) {
		t.Fatalf("err = %v, want ErrChecksumMismatch", err)
	}
	for _, s := range []string{string(want), string(digestOf(payload)), url} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %s", err, s)
		}
	}
	assertEmpty(t, filepath.Join(c.Dir(), "sha256"))
	assertEmpty(t, filepath.Join(c.Dir(), "tmp"))
}

func TestFetchNoChecksum(t *testing.T) {
	payload := []byte("unpinned")
	srv := newFileServer(t, map[string][]byte{"/a.tar.gz": payload})
	core, logs := observer.New(zapcore.WarnLevel)
	c, _ := testCache(t, Options{Logger: zap.New(core)})

	_, err := c.Fetch(context.Background(), Source{URL: srv.URL + "/a.tar.gz"})
	if !errors.Is(err, ErrNoChecksum) || !strings.Contains(err.Error(), "checksum is required") {
		t.Fatalf("err = %v, want ErrNoChecksum", err)
	}
	if n := srv.requests.Load(); n != 0 {
		t.Errorf("made %d requests without a checksum", n)
	}

	res, err := c.Fetch(context.Background(), Source{URL: srv.URL + "/a.tar.gz", InsecureSkipChecksum: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Downloaded || res.Digest != digestOf(payload) {
		t.Errorf("insecure fetch = %+v", res)
	}
	assertContent(t, res.Path, payload)
	if logs.FilterMessageSnippet("WITHOUT CHECKSUM").Len() != 1 {
		t.Errorf("want one loud warning, got %v", logs.All())
	}
}

func TestFetchCorruptedCacheEntry(t *testing.T) {
	payload := bytes.Repeat([]byte{7}, 4096)
	srv := newFileServer(t, map[string][]byte{"/a.tar.gz": payload})
	core, logs := observer.New(zapcore.WarnLevel)
	c, _ := testCache(t, Options{Logger: zap.New(core)})
	src := Source{URL: srv.URL + "/a.tar.gz", Checksum: string(digestOf(payload))}
	res, err := c.Fetch(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	corrupt := func() {
		t.Helper()
		if err := os.Chmod(res.Path, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(res.Path, []byte("bit rot"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	corrupt()
	res2, err := c.Fetch(context.Background(), src)
	if err != nil {
		t.Fatalf("re-fetch of a corrupted entry: %v", err)
	}
	if !res2.Downloaded {
		t.Error("corrupted entry was served without re-fetching")
	}
	assertContent(t, res2.Path, payload)
	if n := srv.requests.Load(); n != 2 {
		t.Errorf("requests = %d, want 2", n)
	}
	if len(dirNames(t, filepath.Join(c.Dir(), "corrupt"))) != 1 {
		t.Error("corrupted entry was not moved to corrupt/")
	}
	if logs.FilterMessageSnippet("corrupted").Len() == 0 {
		t.Error("no warning logged for the corrupted entry")
	}

	corrupt()
	srv.Close()
	_, err = c.Fetch(context.Background(), src)
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrFetch) {
		t.Fatalf("err = %v, want ErrCorrupt and ErrFetch", err)
	}
	if !strings.Contains(err.Error(), "was corrupted") || !strings.Contains(err.Error(), "re-fetching it failed") {
		t.Errorf("error does not explain itself: %v", err)
	}
	if _, err := os.Lstat(res.Path); !os.IsNotExist(err) {
		t.Error("corrupted artifact is still in sha256/")
	}
}

func TestFetchConcurrentDownloadsOnce(t *testing.T) {
	payload := bytes.Repeat([]byte("z"), 1<<20)
	srv := newFileServer(t, map[string][]byte{"/a.tar.gz": payload})
	srv.gate = make(chan struct{})
	srv.started = make(chan struct{}, 1)
	c, _ := testCache(t, Options{})
	src := Source{URL: srv.URL + "/a.tar.gz", Checksum: string(digestOf(payload))}

	const n = 8
	var wg sync.WaitGroup
	results := make([]FetchResult, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = c.Fetch(context.Background(), src)
		}()
	}
	select {
	case <-srv.started:
	case <-time.After(10 * time.Second):
		t.Fatal("no request reached the server")
	}
	close(srv.gate)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || results[i].Digest != digestOf(payload) {
			t.Errorf("fetch %d = %+v, %v", i, results[i], errs[i])
		}
	}
	if got := srv.requests.Load(); got != 1 {
		t.Errorf("%d concurrent fetches made %d requests, want 1", n, got)
	}
}

func TestFetchErrors(t *testing.T) {
	srv := newFileServer(t, map[string][]byte{})
	c, base := testCache(t, Options{})
	sum := string(digestOf([]byte("x")))
	tests := []struct {
		name string
		src  Source
		is   error
	}{
		{"404", Source{URL: srv.URL + "/missing.tar.gz", Checksum: sum}, ErrFetch},
		{"missing file", Source{URL: filepath.Join(base, "nope.tar.gz"), Checksum: sum}, ErrFetch},
		{"directory", Source{URL: base, Checksum: sum}, ErrFetch},
		{"empty URL", Source{Checksum: sum}, nil},
		{"ftp", Source{URL: "ftp://example.com/a.tar.gz", Checksum: sum}, nil},
		{"s3", Source{URL: "s3::https://s3.amazonaws.com/b/a.tar.gz", Checksum: sum}, nil},
		{"git", Source{URL: "git::https://example.com/repo.git", Checksum: sum}, nil},
		{"subdir", Source{URL: srv.URL + "/a//b.tar.gz", Checksum: sum}, nil},
		{"directory URL", Source{URL: srv.URL + "/dir/", Checksum: sum}, nil},
		{"checksum param", Source{URL: srv.URL + "/a.tar.gz?checksum=md5:00", Checksum: sum}, nil},
		{"remote file host", Source{URL: "file://otherhost/a.tar.gz", Checksum: sum}, nil},
		{"md5", Source{URL: srv.URL + "/a.tar.gz", Checksum: "md5:00"}, nil},
		{"bad hex", Source{URL: srv.URL + "/a.tar.gz", Checksum: "sha256:xyz"}, nil},
		{"bad checksums URL", Source{URL: srv.URL + "/a.tar.gz", Checksum: "file:ftp://x/sums"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Fetch(context.Background(), tt.src)
			if err == nil {
				t.Fatal("no error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want %v", err, tt.is)
			}
			if !strings.HasPrefix(err.Error(), "fetch ") {
				t.Errorf("error lacks context: %v", err)
			}
		})
	}
	assertEmpty(t, filepath.Join(c.Dir(), "sha256"))
	assertEmpty(t, filepath.Join(c.Dir(), "tmp"))
}

func TestFetchContextCancelled(t *testing.T) {
	payload := []byte("slow")
	srv := newFileServer(t, map[string][]byte{"/a.tar.gz": payload})
	srv.gate = make(chan struct{})
	srv.started = make(chan struct{}, 1)
	defer close(srv.gate)
	c, _ := testCache(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-srv.started
		cancel()
	}()
	_, err := c.Fetch(ctx, Source{URL: srv.URL + "/a.tar.gz", Checksum: string(digestOf(payload))})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	assertEmpty(t, filepath.Join(c.Dir(), "tmp"))
}

func TestFetchTimeout(t *testing.T) {
	payload := []byte("slow")
	srv := newFileServer(t, map[string][]byte{"/a.tar.gz": payload})
	srv.gate = make(chan struct{})
	defer close(srv.gate)
	c, _ := testCache(t, Options{Timeout: 50 * time.Millisecond})
	_, err := c.Fetch(context.Background(), Source{URL: srv.URL + "/a.tar.gz", Checksum: string(digestOf(payload))})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrFetch) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
}

func TestProgressWriter(t *testing.T) {
	payload := bytes.Repeat([]byte("p"), 3<<20)
	srv := newFileServer(t, map[string][]byte{"/a.tar.gz": payload})
	var out bytes.Buffer
	c, _ := testCache(t, Options{Progress: &out})
	if _, err := c.Fetch(context.Background(), Source{URL: srv.URL + "/a.tar.gz", Checksum: string(digestOf(payload))}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "fetch a.tar.gz: 3.0 MiB / 3.0 MiB (100%) done") {
		t.Errorf("progress output = %q", out.String())
	}
}

func TestProgressLogged(t *testing.T) {
	payload := bytes.Repeat([]byte("p"), 1<<20)
	srv := newFileServer(t, map[string][]byte{"/a.tar.gz": payload})
	core, logs := observer.New(zapcore.InfoLevel)
	c, _ := testCache(t, Options{Logger: zap.New(core)})
	// A clock that moves 1 s per reading: a line every 5 readings.
	var ticks atomic.Int64
	c.now = func() time.Time { return time.Unix(ticks.Add(1), 0) }
	if _, err := c.Fetch(context.Background(), Source{URL: srv.URL + "/a.tar.gz", Checksum: string(digestOf(payload))}); err != nil {
		t.Fatal(err)
	}
	lines := logs.FilterMessage("download progress").All()
	if len(lines) == 0 {
		t.Fatal("no progress logged")
	}
	reads := ticks.Load()
	if max := reads/5 + 1; int64(len(lines)) > max {
		t.Errorf("%d progress lines for %d clock readings; want at most one per 5 s", len(lines), reads)
	}
}

// TestFetchDownloadLimit: a download over Options.MaxDownload fails with
// ErrTooLarge and leaves nothing in the cache, over HTTP (a body that is
// cut, not trusted) and from a local file; exactly the limit is fine.
func TestFetchDownloadLimit(t *testing.T) {
	const limit = 4096
	big := bytes.Repeat([]byte("x"), limit+1)
	exact := bytes.Repeat([]byte("y"), limit)
	srv := newFileServer(t, map[string][]byte{"/big.tar.gz": big, "/exact.tar.gz": exact})
	bigFile := filepath.Join(t.TempDir(), "big.tar.gz")
	if err := os.WriteFile(bigFile, big, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, src := range []Source{
		{URL: srv.URL + "/big.tar.gz", Checksum: string(digestOf(big))},
		{URL: srv.URL + "/big.tar.gz", InsecureSkipChecksum: true},
		{URL: bigFile, Checksum: string(digestOf(big))},
	} {
		c, _ := testCache(t, Options{MaxDownload: limit})
		_, err := c.Fetch(context.Background(), src)
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "4096") {
			t.Errorf("Fetch(%s) = %v; want ErrTooLarge naming the limit", src.URL, err)
		}
		assertEmpty(t, filepath.Join(c.Dir(), "sha256"))
		assertEmpty(t, filepath.Join(c.Dir(), "tmp"))
	}
	c, _ := testCache(t, Options{MaxDownload: limit})
	if _, err := c.Fetch(context.Background(), Source{URL: srv.URL + "/exact.tar.gz", Checksum: string(digestOf(exact))}); err != nil {
		t.Errorf("a download of exactly the limit: %v", err)
	}
	if _, err := OpenCache(t.TempDir(), Options{MaxDownload: -1}); err == nil {
		t.Error("a negative download limit was accepted")
	}
}
