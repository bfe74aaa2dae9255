package logrotate

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain doubles as the writer process: with LOGROTATE_WRITER set, the
// test binary opens that file O_APPEND, as containerd's shim does, and for
// each "FROM TO" line on stdin writes lines FROM..TO-1 and answers "ok".
func TestMain(m *testing.M) {
	if path := os.Getenv("LOGROTATE_WRITER"); path != "" {
		os.Exit(writer(path))
	}
	os.Exit(m.Run())
}

func writer(path string) int {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var from, to int
		if _, err := fmt.Sscan(sc.Text(), &from, &to); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for i := from; i < to; i++ {
			if _, err := fmt.Fprintf(f, "line %06d\n", i); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		fmt.Println("ok")
	}
	return 0
}

// appendWriter is another process holding path open with O_APPEND.
type appendWriter struct {
	t   *testing.T
	in  io.WriteCloser
	out *bufio.Scanner
}

func startWriter(t *testing.T, path string) *appendWriter {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "LOGROTATE_WRITER="+path)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); _ = cmd.Wait() })
	return &appendWriter{t: t, in: in, out: bufio.NewScanner(out)}
}

// write has the writer append lines from..to-1 and waits until it did.
func (w *appendWriter) write(from, to int) {
	w.t.Helper()
	fmt.Fprintf(w.in, "%d %d\n", from, to)
	if !w.out.Scan() || w.out.Text() != "ok" {
		w.t.Fatalf("writer did not answer: %v", w.out.Err())
	}
}

func lines(from, to int) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "line %06d\n", i)
	}
	return b.String()
}

const lineLen = int64(len("line 000000\n"))

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return string(b)
}

// TestRotateAppendWriter rotates a file another process holds open with
// O_APPEND: its later writes land at the start of the truncated file (no
// hole), and every rotated file holds exactly what was written before.
func TestRotateAppendWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	w := startWriter(t, path)
	p := Policy{MaxSize: 100 * lineLen, MaxFiles: 3, Compress: true}

	w.write(0, 100)
	if plan, err := Rotate(path, p); err != nil || !plan.Rotate {
		t.Fatalf("Rotate = %+v, %v; want a rotation", plan, err)
	}
	w.write(100, 150)
	if got := readFile(t, path); got != lines(100, 150) {
		t.Fatalf("live file after rotation: %d bytes, want the 50 later lines only (%d bytes)", len(got), 50*lineLen)
	}
	if got := readFile(t, path+".1"); got != lines(0, 100) {
		t.Fatalf("c.log.1 is not the first 100 lines")
	}
	if plan, err := Rotate(path, p); err != nil || plan.Rotate {
		t.Fatalf("Rotate below the cap = %+v, %v; want nothing", plan, err)
	}

	for round := 1; round <= 4; round++ {
		w.write(50+round*100, 150+round*100)
		if _, err := Rotate(path, p); err != nil {
			t.Fatal(err)
		}
	}
	// Live file empty; .1 = the last 100 lines, .2.gz the 100 before; nothing older.
	entries, _ := os.ReadDir(filepath.Dir(path))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := "c.log c.log.1 c.log.2.gz"; strings.Join(names, " ") != want {
		t.Fatalf("files %v, want %s", names, want)
	}
	if got := readFile(t, path+".1"); got != lines(450, 550) {
		t.Fatalf("c.log.1 = %q…", got[:min(len(got), 40)])
	}
	if got := readFile(t, path+".2.gz"); got != lines(350, 450) {
		t.Fatalf("c.log.2.gz = %q…", got[:min(len(got), 40)])
	}
	w.write(550, 551)
	if got := readFile(t, path); got != lines(550, 551) {
		t.Fatalf("live file = %q, want the one later line", got)
	}
}

// TestFollowerAcrossRotation: a follower started before rotations prints
// every line once, in order, whether it polls between every step or
// only after several.
func TestFollowerAcrossRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	w := startWriter(t, path)
	p := Policy{MaxSize: 10 * lineLen, MaxFiles: 3}
	w.write(0, 5)
	fl := NewFollower(path)
	defer fl.Close()
	var got bytes.Buffer
	poll := func() {
		t.Helper()
		if err := fl.Poll(&got); err != nil {
			t.Fatal(err)
		}
	}
	poll()
	w.write(5, 12)
	poll()
	if _, err := Rotate(path, p); err != nil { // 12 lines: rotates
		t.Fatal(err)
	}
	w.write(12, 14)
	poll() // sees the new c.log.1: nothing of 0..11 again, then 12..13
	w.write(14, 25)
	poll()
	if _, err := Rotate(path, p); err != nil { // 13 lines: rotates
		t.Fatal(err)
	}
	w.write(25, 27)
	poll()
	if got.String() != lines(0, 27) {
		t.Fatalf("followed output:\n%s\nwant lines 0..26 once each", got.String())
	}

	// Truncated with no NAME.1 (MaxFiles 1): after one more poll, read from the start.
	got.Reset()
	w.write(27, 40)
	poll()
	if _, err := Rotate(path, Policy{MaxSize: 1, MaxFiles: 1}); err != nil {
		t.Fatal(err)
	}
	w.write(40, 41)
	poll() // shorter than read: waits a poll for NAME.1
	poll()
	if got.String() != lines(27, 41) {
		t.Fatalf("after a plain truncate:\n%s", got.String())
	}
}

// TestReadSinceAndTail: a run's output and the last lines are found
// across one rotation.
func TestReadSinceAndTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	w := startWriter(t, path)
	w.write(0, 10)
	pos := Mark(path)
	w.write(10, 20)
	if got := string(ReadSince(path, pos, 1<<20)); got != lines(10, 20) {
		t.Fatalf("ReadSince before a rotation = %q", got)
	}
	if _, err := Rotate(path, Policy{MaxSize: 1, MaxFiles: 5}); err != nil {
		t.Fatal(err)
	}
	w.write(20, 23)
	if got := string(ReadSince(path, pos, 1<<20)); got != lines(10, 23) {
		t.Fatalf("ReadSince across a rotation = %q", got)
	}
	if got := string(ReadSince(path, pos, 2*lineLen)); got != lines(21, 23) {
		t.Fatalf("ReadSince capped = %q", got)
	}
	if got := strings.Join(Tail(path, 5), "\n") + "\n"; got != lines(18, 23) {
		t.Fatalf("Tail across a rotation = %q", got)
	}
	if got := strings.Join(Tail(path, 2), "\n") + "\n"; got != lines(21, 23) {
		t.Fatalf("Tail = %q", got)
	}
}

func TestTailStart(t *testing.T) {
	for _, tc := range []struct {
		in        string
		n         int
		wantStart int64
		wantLines int
	}{
		{"a\nb\nc\n", 2, 2, 2},
		{"a\nb\nc", 2, 2, 2},
		{"a\nb\nc\n", 5, 0, 3},
		{"a\nb\nc\n", 0, 6, 0},
		{"", 3, 0, 0},
	} {
		start, n, err := TailStart(strings.NewReader(tc.in), int64(len(tc.in)), tc.n)
		if err != nil || start != tc.wantStart || n != tc.wantLines {
			t.Errorf("TailStart(%q, %d) = %d, %d, %v; want %d, %d", tc.in, tc.n, start, n, err, tc.wantStart, tc.wantLines)
		}
	}
}

// TestRotatorStops: Run checks at once and returns when its context ends.
func TestRotatorStops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	if err := os.WriteFile(path, []byte(lines(0, 20)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Rotator{Paths: []string{path, filepath.Join(t.TempDir(), "missing.log")},
		Policy: Policy{MaxSize: 10 * lineLen, MaxFiles: 2}, Interval: time.Hour}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path + ".1"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no rotation within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestFollowerMidRotation: a Poll that falls between the shift of NAME.1
// to NAME.2 and the new NAME.1 reads the live file on, and the rotation is
// seen once NAME.1 is back: nothing twice, nothing missed.
func TestFollowerMidRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	w := startWriter(t, path)
	p := Policy{MaxSize: 1, MaxFiles: 3}
	w.write(0, 3)
	if _, err := Rotate(path, p); err != nil {
		t.Fatal(err)
	}
	w.write(3, 6)
	fl := NewFollower(path)
	defer fl.Close()
	var got bytes.Buffer
	if err := fl.Poll(&got); err != nil {
		t.Fatal(err)
	}
	pos := Mark(path)
	// The first step of the next rotation: NAME.1 shifted away.
	if err := os.Rename(path+".1", path+".2"); err != nil {
		t.Fatal(err)
	}
	w.write(6, 8)
	if err := fl.Poll(&got); err != nil {
		t.Fatal(err)
	}
	if s := string(ReadSince(path, pos, 1<<20)); s != lines(6, 8) {
		t.Fatalf("ReadSince mid-rotation = %q", s)
	}
	// The rest of it: copy, truncate, NAME.1 back.
	if err := copyTruncate(path, true); err != nil {
		t.Fatal(err)
	}
	w.write(8, 9)
	if err := fl.Poll(&got); err != nil {
		t.Fatal(err)
	}
	if got.String() != lines(3, 9) {
		t.Fatalf("followed mid-rotation:\n%s\nwant lines 3..8 once each", got.String())
	}
	if s := string(ReadSince(path, pos, 1<<20)); s != lines(6, 9) {
		t.Fatalf("ReadSince after the rotation = %q", s)
	}
}

// TestRotateCleansUp: a temporary file left by a rotation cut short is
// removed, and rotated files beyond a lowered count are deleted without a
// rotation; files of another log in the directory are left alone.
func TestRotateCleansUp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.log")
	for name, body := range map[string]string{
		"c.log": "live\n", "c.log.1": "one\n", "c.log.2.gz": "", "c.log.3.gz": "", "c.log.4.gz": "",
		"c.log.1.rotating": "half a copy", "d.log.1": "another log\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	plan, err := Rotate(path, Policy{MaxSize: 1 << 20, MaxFiles: 3, Compress: true})
	if err != nil || plan.Rotate {
		t.Fatalf("Rotate = %+v, %v", plan, err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got, want := strings.Join(names, " "), "c.log c.log.1 c.log.2.gz d.log.1"; got != want {
		t.Fatalf("files %q, want %q", got, want)
	}
	if got := readFile(t, path); got != "live\n" {
		t.Fatalf("live file = %q", got)
	}
}
