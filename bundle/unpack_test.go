package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type member struct {
	hdr  tar.Header
	body []byte
}

func file(name string, mode int64, body string) member {
	return member{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, body: []byte(body)}
}

func dir(name string) member {
	return member{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

func tarOf(t testing.TB, members ...member) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		h := m.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(m.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipOf(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zeroBomb is a gzip stream of a tar with one member of size bytes of zeros,
// built from concatenated gzip members so that it stays small and fast: the
// tar header, then size/1MiB copies of one compressed MiB of zeros, then the
// (all-zero) end-of-archive blocks.
func zeroBomb(t testing.TB, size int64) []byte {
	t.Helper()
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "zeros", Mode: 0o644, Size: size}); err != nil {
		t.Fatal(err)
	}
	// WriteHeader has written the header block; the tar.Writer is dropped
	// unclosed because the body is produced below.
	if hdr.Len() != 512 {
		t.Fatalf("header is %d bytes", hdr.Len())
	}
	const mib = 1 << 20
	if size%mib != 0 {
		t.Fatal("bomb size must be whole MiB")
	}
	out := bytes.NewBuffer(gzipOf(t, hdr.Bytes()))
	chunk := gzipOf(t, make([]byte, mib))
	for range size / mib {
		out.Write(chunk)
	}
	out.Write(gzipOf(t, make([]byte, 1024)))
	return out.Bytes()
}

// put stores archive in the cache through a real Fetch from a plain path.
func put(t testing.TB, c *Cache, archive []byte) Digest {
	t.Helper()
	src := filepath.Join(t.TempDir(), "archive.tar.gz")
	if err := os.WriteFile(src, archive, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := c.Fetch(context.Background(), Source{URL: src, Checksum: string(digestOf(archive))})
	if err != nil {
		t.Fatal(err)
	}
	return res.Digest
}

func TestUnpackRefusesHostileArchives(t *testing.T) {
	evilAbs := fmt.Sprintf("/tmp/m3sup-bundle-test-evil-%d", os.Getpid())
	tests := []struct {
		name     string
		archive  func(t testing.TB) []byte
		mention  string // the member or reason the error must name
		truncate bool
	}{
		{"dot dot", func(t testing.TB) []byte {
			return gzipOf(t, tarOf(t, file("ok", 0o644, "fine"), file("../../../../evil", 0o644, "pwned")))
		}, "../../../../evil", false},
		{"dot dot inside", func(t testing.TB) []byte {
			return gzipOf(t, tarOf(t, file("a/../../evil", 0o644, "pwned")))
		}, "a/../../evil", false},
		{"absolute", func(t testing.TB) []byte {
			return gzipOf(t, tarOf(t, file(evilAbs, 0o644, "pwned")))
		}, evilAbs, false},
		{"symlink", func(t testing.TB) []byte {
			return gzipOf(t, tarOf(t,
				member{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc", Linkname: "/etc"}},
				file("etc/evil", 0o644, "pwned")))
		}, `"etc" is a symlink`, false},
		{"hardlink", func(t testing.TB) []byte {
			return gzipOf(t, tarOf(t,
				member{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "pw", Linkname: "../../../../../etc/passwd"}}))
		}, `"pw" is a hard link`, false},
		{"char device", func(t testing.TB) []byte {
			return gzipOf(t, tarOf(t,
				member{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "null", Mode: 0o666, Devmajor: 1, Devminor: 3}}))
		}, `"null" is a device`, false},
		{"fifo", func(t testing.TB) []byte {
			return tarOf(t, member{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "pipe", Mode: 0o644}})
		}, `"pipe" is a device or fifo`, false},
		{"reserved manifest name", func(t testing.TB) []byte {
			return gzipOf(t, tarOf(t, file(ManifestName, 0o644, "{}")))
		}, "reserved", false},
		{"bomb", func(t testing.TB) []byte { return zeroBomb(t, 1<<30) }, `"zeros"`, false},
		{"many members over the byte limit", func(t testing.TB) []byte {
			big := strings.Repeat("b", 4<<20)
			return gzipOf(t, tarOf(t, file("a", 0o644, big), file("b", 0o644, big), file("c", 0o644, big)))
		}, `"c"`, false},
		{"too many files", func(t testing.TB) []byte {
			var ms []member
			for i := range 20 {
				ms = append(ms, file(fmt.Sprintf("f%02d", i), 0o644, "x"))
			}
			return gzipOf(t, tarOf(t, ms...))
		}, "more than 10 entries", false},
		{"truncated gzip", func(t testing.TB) []byte {
			b := gzipOf(t, tarOf(t, file("a", 0o644, strings.Repeat("abcdefgh", 4096)), file("b", 0o644, "tail")))
			return b[:len(b)/2]
		}, "truncated", true},
		{"truncated tar", func(t testing.TB) []byte {
			b := tarOf(t, file("a", 0o644, strings.Repeat("x", 5000)))
			return b[:2048]
		}, "truncated", true},
		{"not an archive", func(t testing.TB) []byte { return []byte("just some text, not a tar") }, "archive", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, base := testCache(t, Options{MaxFiles: 10, MaxBytes: 10 << 20})
			d := put(t, c, tt.archive(t))

			dir, err := c.Unpack(context.Background(), d)
			if !errors.Is(err, ErrUnsafeArchive) {
				t.Fatalf("Unpack = %q, %v; want ErrUnsafeArchive", dir, err)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error %q does not mention %q", err, tt.mention)
			}
			if tt.truncate && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("truncation error does not wrap io.ErrUnexpectedEOF: %v", err)
			}
			// Nothing outside cache/, nothing left in unpacked/.
			if got := dirNames(t, base); len(got) != 1 || got[0] != "data" {
				t.Errorf("%s holds %v", base, got)
			}
			if got := dirNames(t, filepath.Join(base, "data")); len(got) != 1 || got[0] != "cache" {
				t.Errorf("data dir holds %v", got)
			}
			assertEmpty(t, filepath.Join(c.Dir(), "unpacked"))
			assertEmpty(t, filepath.Join(c.Dir(), "tmp"))
			if got := dirNames(t, c.Dir()); strings.Join(got, ",") != "corrupt,refs,sha256,tmp,unpacked" {
				t.Errorf("cache dir holds %v", got)
			}
			if _, err := os.Lstat(evilAbs); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s was written", evilAbs)
				os.Remove(evilAbs)
			}
		})
	}
}

func goodArchive(t testing.TB) []byte {
	return tarOf(t,
		dir("m3_1.5.0_linux_amd64/"),
		file("m3_1.5.0_linux_amd64/m3dbnode", 0o755, "#!/bin/true\ndbnode"),
		file("m3_1.5.0_linux_amd64/m3coordinator", 0o4755, "#!/bin/true\ncoordinator"),
		file("m3_1.5.0_linux_amd64/LICENSE", 0o644, "Apache-2.0"),
		file("./m3_1.5.0_linux_amd64/docs/README.md", 0o600, "# M3"),
	)
}

func TestUnpackGoodArchiveAndRepair(t *testing.T) {
	for _, tt := range []struct {
		name string
		wrap func(testing.TB, []byte) []byte
	}{
		{"tar.gz", gzipOf},
		{"tar", func(_ testing.TB, b []byte) []byte { return b }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := testCache(t, Options{})
			d := put(t, c, tt.wrap(t, goodArchive(t)))
			dir, err := c.Unpack(context.Background(), d)
			if err != nil {
				t.Fatal(err)
			}
			if dir != filepath.Join(c.Dir(), "unpacked", d.Hex()) {
				t.Errorf("dir = %s", dir)
			}
			root := filepath.Join(dir, "m3_1.5.0_linux_amd64")
			want := map[string]struct {
				body string
				mode fs.FileMode
			}{
				"m3dbnode":       {"#!/bin/true\ndbnode", 0o755},
				"m3coordinator":  {"#!/bin/true\ncoordinator", 0o755}, // setuid dropped
				"LICENSE":        {"Apache-2.0", 0o644},
				"docs/README.md": {"# M3", 0o600},
			}
			check := func() {
				t.Helper()
				for name, w := range want {
					p := filepath.Join(root, name)
					assertContent(t, p, []byte(w.body))
					fi, err := os.Stat(p)
					if err != nil {
						t.Fatal(err)
					}
					if fi.Mode() != w.mode {
						t.Errorf("%s: mode %v, want %v", name, fi.Mode(), w.mode)
					}
				}
			}
			check()
			if _, err := os.Stat(filepath.Join(dir, ManifestName)); err != nil {
				t.Errorf("no manifest: %v", err)
			}
			if got := dirNames(t, filepath.Join(c.Dir(), "unpacked")); len(got) != 1 {
				t.Errorf("unpacked/ holds %v", got)
			}

			// Untouched: the same tree, not re-extracted.
			marker, _ := os.Stat(filepath.Join(root, "LICENSE"))
			if again, err := c.Unpack(context.Background(), d); err != nil || again != dir {
				t.Fatalf("second Unpack = %s, %v", again, err)
			}
			if fi, _ := os.Stat(filepath.Join(root, "LICENSE")); !os.SameFile(marker, fi) {
				t.Error("an intact tree was extracted again")
			}

			damage := []struct {
				name string
				do   func() error
			}{
				{"same-size tamper", func() error {
					return os.WriteFile(filepath.Join(root, "m3dbnode"), []byte("#!/bin/evil\ndbnode"), 0o755)
				}},
				{"truncate", func() error { return os.Truncate(filepath.Join(root, "LICENSE"), 3) }},
				{"delete", func() error { return os.Remove(filepath.Join(root, "docs/README.md")) }},
				{"chmod", func() error { return os.Chmod(filepath.Join(root, "LICENSE"), 0o777) }},
				{"extra file", func() error { return os.WriteFile(filepath.Join(root, "backdoor"), []byte("x"), 0o755) }},
				{"symlink swap", func() error {
					p := filepath.Join(root, "m3coordinator")
					if err := os.Remove(p); err != nil {
						return err
					}
					return os.Symlink("/bin/sh", p)
				}},
			}
			for _, dm := range damage {
				if err := dm.do(); err != nil {
					t.Fatalf("%s: %v", dm.name, err)
				}
				again, err := c.Unpack(context.Background(), d)
				if err != nil || again != dir {
					t.Fatalf("%s: Unpack = %s, %v", dm.name, again, err)
				}
				check()
				if _, err := os.Lstat(filepath.Join(root, "backdoor")); err == nil {
					t.Errorf("%s: extra file survived the repair", dm.name)
				}
			}
			if got := dirNames(t, filepath.Join(c.Dir(), "unpacked")); len(got) != 1 {
				t.Errorf("unpacked/ holds %v after repairs", got)
			}
		})
	}
}

func TestUnpackCorruptArchive(t *testing.T) {
	c, _ := testCache(t, Options{})
	d := put(t, c, gzipOf(t, goodArchive(t)))
	p := c.Path(d)
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, gzipOf(t, tarOf(t, file("../evil", 0o644, "x"))), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := c.Unpack(context.Background(), d)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "corrupted") {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	if c.Has(d) {
		t.Error("corrupted archive is still in the cache")
	}
	assertEmpty(t, filepath.Join(c.Dir(), "unpacked"))
}

func TestUnpackMissingAndInvalid(t *testing.T) {
	c, _ := testCache(t, Options{})
	if _, err := c.Unpack(context.Background(), digestOf([]byte("absent"))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing digest: err = %v, want fs.ErrNotExist", err)
	}
	if _, err := c.Unpack(context.Background(), Digest("sha256:../../etc")); err == nil {
		t.Error("invalid digest accepted")
	}
}

func TestMemberPath(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"a/b", "a/b", true},
		{"./a/b/", "a/b", true},
		{"./", ".", true},
		{"a//b", "a/b", true},
		{"..", "", false},
		{"a/..", "", false},
		{"../a", "", false},
		{"/a", "", false},
		{"", "", false},
		{"a\x00b", "", false},
	}
	for _, tt := range tests {
		got, err := memberPath(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("memberPath(%q) = %q, %v", tt.in, got, err)
		}
	}
}
