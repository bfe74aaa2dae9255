package containerd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	goruntime "github.com/m3sup/m3sup/runtime"
)

// tinyDir holds the static test program "tinyproc", built by TestMain.
var (
	tinyDir  string
	buildErr error
)

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "tinyproc")
		if err != nil {
			buildErr = err
			return m.Run()
		}
		defer os.RemoveAll(dir)
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "tinyproc"), "./testdata/tinyproc")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build testdata/tinyproc: %v\n%s", err, out)
		}
		tinyDir = dir
		return m.Run()
	}()
	os.Exit(code)
}

// requireHost skips (or fails under CI=true) when the host cannot run
// containers, and fails if the test program did not build.
func requireHost(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"containerd", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" in PATH")
		}
	}
	if len(missing) > 0 {
		msg := "needs " + strings.Join(missing, ", ") + " (apt-get install -y containerd runc; run as root)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

const testNamespace = "m3sup-test"

// newManaged starts a Runtime with its own managed containerd; cleanup closes it.
func newManaged(t testing.TB) *Runtime {
	t.Helper()
	requireHost(t)
	sockDir, err := os.MkdirTemp("/tmp", "ctd") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	r := New(Options{
		Mode:      ModeManaged,
		Namespace: testNamespace,
		StateDir:  t.TempDir(),
		SocketDir: sockDir,
		Logger:    testLogger(t),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := r.Start(ctx); err != nil {
		r.Close()
		t.Fatalf("start managed containerd: %v", err)
	}
	t.Logf("managed containerd %s up in %s", r.Info().Version, time.Since(start))
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close runtime: %v", err)
		}
	})
	return r
}

func testLogger(t testing.TB) *zap.Logger {
	if tt, ok := t.(*testing.T); ok {
		return zaptest.NewLogger(tt, zaptest.Level(zap.InfoLevel))
	}
	return zap.NewNop()
}

// supervise runs r.Supervise until the test ends.
func supervise(t *testing.T, r *Runtime) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Supervise(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("supervise: %v", err)
		}
	})
}

// tinySpec is a container running tinyproc with args, the program's
// directory bind-mounted read-only at /t and a data dir read-write at /data.
func tinySpec(t testing.TB, id string, args ...string) (goruntime.Spec, string) {
	data := t.TempDir()
	return goruntime.Spec{
		ID:     id,
		RootFS: t.TempDir(),
		Args:   append([]string{"/t/tinyproc"}, args...),
		Env:    []string{"TINY=yes"},
		Mounts: []goruntime.Mount{
			{Source: tinyDir, Destination: "/t", ReadOnly: true},
			{Source: data, Destination: "/data"},
		},
		NoFile:  testNoFile(t),
		LogPath: filepath.Join(t.TempDir(), "logs", id+".log"),
		Labels: map[string]string{
			goruntime.LabelOwner:     goruntime.OwnerValue,
			goruntime.LabelComponent: "tiny",
		},
	}, data
}

// m3NoFile is the RLIMIT_NOFILE M3 asks for.
const m3NoFile = 3_000_000

// testNoFile is m3NoFile, or the host's fs.nr_open ceiling if lower.
func testNoFile(t testing.TB) uint64 {
	limit, err := MaxNoFile()
	if err != nil {
		t.Fatal(err)
	}
	return min(m3NoFile, limit)
}

// run starts spec and removes the container when the test ends.
func run(t testing.TB, r *Runtime, spec goruntime.Spec) goruntime.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	st, err := r.Run(ctx, spec)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if tt, ok := t.(*testing.T); ok {
		tt.Logf("Run %s: pid %d in %s", spec.ID, st.PID, time.Since(start))
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.Remove(ctx, spec.ID); err != nil && !errors.Is(err, errClosed) {
			t.Errorf("cleanup: %v", err)
		}
	})
	return st
}

// waitFor polls cond every 5ms until it holds or limit passes.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		<-tick.C
	}
}

// waitReady waits until tinyproc has installed its signal handler.
func waitReady(t testing.TB, logPath string) {
	t.Helper()
	waitFor(t, 10*time.Second, "tinyproc ready in "+logPath, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "ready\n")
	})
}

// waitExit receives from ch with a limit.
func waitExit(t testing.TB, ch <-chan goruntime.Exit, limit time.Duration) goruntime.Exit {
	t.Helper()
	select {
	case e := <-ch:
		if e.Err != nil {
			t.Fatalf("wait: %v", e.Err)
		}
		return e
	case <-time.After(limit):
		t.Fatalf("no exit within %s", limit)
		return goruntime.Exit{}
	}
}

func TestManagedStartAndClose(t *testing.T) {
	r := newManaged(t)
	info := r.Info()
	if info.Mode != ModeManaged || !info.Connected || info.ManagedPID <= 0 || !strings.HasPrefix(info.Version, "1.") && !strings.HasPrefix(info.Version, "2.") {
		t.Fatalf("info after start = %+v", info)
	}
	if want := filepath.Join(r.opts.SocketDir, "containerd.sock"); info.Address != want {
		t.Errorf("address = %q, want %q", info.Address, want)
	}
	cfg, err := os.ReadFile(r.configPath())
	if err != nil || !strings.Contains(string(cfg), `"io.containerd.grpc.v1.cri"`) {
		t.Errorf("config %s: %v\n%s", r.configPath(), err, cfg)
	}
	start := time.Now()
	if err := r.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	t.Logf("Close (SIGTERM to containerd) took %s", time.Since(start))
	if err := r.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := syscall.Kill(info.ManagedPID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("managed containerd pid %d still exists after Close: %v", info.ManagedPID, err)
	}
	if got := r.Info(); got.Connected || got.ManagedPID != 0 {
		t.Errorf("info after close = %+v", got)
	}
	if _, err := r.List(context.Background()); !errors.Is(err, errClosed) {
		t.Errorf("List after Close: %v, want errClosed", err)
	}
}

func TestRunOutputRlimitMounts(t *testing.T) {
	r := newManaged(t)
	spec, data := tinySpec(t, "out", "-touch", "/data/hello", "-exit", "0")
	st := run(t, r, spec)
	if st.PID == 0 || st.State != goruntime.StateRunning || st.Labels[goruntime.LabelComponent] != "tiny" {
		t.Fatalf("status from Run = %+v", st)
	}
	ch, err := r.Wait(context.Background(), spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, ch, 10*time.Second); e.Code != 0 {
		t.Fatalf("exit code %d; log:\n%s", e.Code, readFile(t, spec.LogPath))
	}
	log := readFile(t, spec.LogPath)
	for _, want := range []string{
		fmt.Sprintf("nofile soft=%d hard=%d", spec.NoFile, spec.NoFile),
		`args=["/t/tinyproc" "-touch" "/data/hello" "-exit" "0"]`,
		"env TINY=yes",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if b, err := os.ReadFile(filepath.Join(data, "hello")); err != nil || string(b) != "hello\n" {
		t.Errorf("rw mount: %q, %v", b, err)
	}
}

// TestRlimitM3 runs with M3's RLIMIT_NOFILE of 3000000: it must be applied
// exactly, or, on a host whose fs.nr_open is lower, refused with the fix.
func TestRlimitM3(t *testing.T) {
	r := newManaged(t)
	spec, _ := tinySpec(t, "nofile", "-exit", "0")
	spec.NoFile = m3NoFile
	if limit, _ := MaxNoFile(); limit < m3NoFile {
		_, err := r.Run(context.Background(), spec)
		if err == nil || !strings.Contains(err.Error(), "RLIMIT_NOFILE 3000000 exceeds") {
			t.Fatalf("Run with NoFile above the host's limit %d: %v", limit, err)
		}
		t.Logf("max NOFILE is %d here: Run refused 3000000 with: %v", limit, err)
		return
	}
	run(t, r, spec)
	ch, err := r.Wait(context.Background(), spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitExit(t, ch, 10*time.Second)
	if log := readFile(t, spec.LogPath); !strings.Contains(log, "nofile soft=3000000 hard=3000000\n") {
		t.Fatalf("log:\n%s", log)
	}
}

func TestWaitExitCode(t *testing.T) {
	r := newManaged(t)
	spec, _ := tinySpec(t, "code", "-exit", "7")
	run(t, r, spec)
	ch, err := r.Wait(context.Background(), spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, ch, 10*time.Second); e.Code != 7 || e.At.IsZero() {
		t.Fatalf("exit = %+v, want code 7 with a time", e)
	}
	// The task has exited: a new Wait delivers at once.
	ch, err = r.Wait(context.Background(), spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, ch, 2*time.Second); e.Code != 7 {
		t.Fatalf("second wait: code %d", e.Code)
	}
	st, err := r.Status(context.Background(), spec.ID)
	if err != nil || st.State != goruntime.StateStopped || st.ExitCode != 7 || st.ExitedAt.IsZero() {
		t.Fatalf("status = %+v, %v", st, err)
	}
}

func TestStopGraceful(t *testing.T) {
	r := newManaged(t)
	spec, _ := tinySpec(t, "term", "-sleep", "1h")
	run(t, r, spec)
	waitReady(t, spec.LogPath)
	start := time.Now()
	e, err := r.Stop(context.Background(), spec.ID, 5*time.Second)
	if err != nil || e.Code != 0 {
		t.Fatalf("stop = %+v, %v", e, err)
	}
	t.Logf("Stop (SIGTERM handled) took %s", time.Since(start))
	if !strings.Contains(readFile(t, spec.LogPath), "got SIGTERM") {
		t.Errorf("process did not see SIGTERM")
	}
	if _, err := r.Status(context.Background(), spec.ID); !errors.Is(err, goruntime.ErrNotFound) {
		t.Errorf("status after stop: %v, want ErrNotFound", err)
	}
	if _, err := r.Stop(context.Background(), spec.ID, time.Second); err != nil {
		t.Errorf("stop of a missing container: %v", err)
	}
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	r := newManaged(t)
	spec, _ := tinySpec(t, "stubborn", "-ignore-term", "-sleep", "1h")
	run(t, r, spec)
	waitReady(t, spec.LogPath)
	const timeout = 300 * time.Millisecond
	start := time.Now()
	e, err := r.Stop(context.Background(), spec.ID, timeout)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if e.Code != 128+uint32(syscall.SIGKILL) {
		t.Errorf("exit code %d, want %d (SIGKILL)", e.Code, 128+syscall.SIGKILL)
	}
	if took < timeout || took > timeout+3*time.Second {
		t.Errorf("stop took %s with timeout %s", took, timeout)
	}
	t.Logf("Stop with SIGKILL fallback took %s (timeout %s)", took, timeout)
}

func TestAdoptionBySecondRuntime(t *testing.T) {
	r1 := newManaged(t)
	spec, _ := tinySpec(t, "adopt", "-sleep", "1h")
	st1 := run(t, r1, spec)
	waitReady(t, spec.LogPath)

	// A restarted m3sup: a new Runtime on the same socket.
	r2 := New(Options{Address: r1.Info().Address, Namespace: testNamespace, Logger: testLogger(t)})
	if err := r2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })
	if info := r2.Info(); info.Mode != ModeExternal || !info.Connected || info.ManagedPID != 0 {
		t.Fatalf("second runtime info = %+v", info)
	}

	list, err := r2.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list, func(s goruntime.Status) bool { return s.ID == spec.ID })
	if i < 0 {
		t.Fatalf("list lacks %s: %+v", spec.ID, list)
	}
	got := list[i]
	if got.PID != st1.PID || got.State != goruntime.StateRunning ||
		got.Labels[goruntime.LabelOwner] != goruntime.OwnerValue || got.Labels[goruntime.LabelComponent] != "tiny" {
		t.Fatalf("adopted status = %+v, want pid %d running with labels", got, st1.PID)
	}
	st2, err := r2.Status(context.Background(), spec.ID)
	if err != nil || st2.PID != st1.PID {
		t.Fatalf("status from second runtime = %+v, %v", st2, err)
	}

	ch, err := r2.Wait(context.Background(), spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r1.Stop(context.Background(), spec.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, ch, 10*time.Second); e.Code != 0 {
		t.Fatalf("adopted wait: code %d", e.Code)
	}
}

func TestRemove(t *testing.T) {
	r := newManaged(t)
	spec, _ := tinySpec(t, "rm", "-ignore-term", "-sleep", "1h")
	st := run(t, r, spec)
	ctx := context.Background()
	start := time.Now()
	if err := r.Remove(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	t.Logf("Remove (SIGKILL + delete) took %s", time.Since(start))
	if _, err := r.Status(ctx, spec.ID); !errors.Is(err, goruntime.ErrNotFound) {
		t.Errorf("status after remove: %v, want ErrNotFound", err)
	}
	if list, err := r.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("list after remove = %+v, %v", list, err)
	}
	if err := syscall.Kill(int(st.PID), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("pid %d still exists: %v", st.PID, err)
	}
	if err := r.Remove(ctx, spec.ID); err != nil {
		t.Errorf("second remove: %v", err)
	}
	if _, err := r.Wait(ctx, spec.ID); !errors.Is(err, errdefs.ErrNotFound) || !errors.Is(err, goruntime.ErrNotFound) {
		t.Errorf("wait on a removed container: %v", err)
	}
}

func TestRunExistingIDFails(t *testing.T) {
	r := newManaged(t)
	spec, _ := tinySpec(t, "dup", "-sleep", "1h")
	st := run(t, r, spec)
	_, err := r.Run(context.Background(), spec)
	if !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second Run: %v, want AlreadyExists", err)
	}
	got, err := r.Status(context.Background(), spec.ID)
	if err != nil || got.PID != st.PID || got.State != goruntime.StateRunning {
		t.Fatalf("original container after a refused Run: %+v, %v", got, err)
	}
}

func TestSuperviseRestartsKilledContainerd(t *testing.T) {
	r := newManaged(t)
	supervise(t, r)
	spec, _ := tinySpec(t, "survivor", "-sleep", "1h")
	st := run(t, r, spec)
	waitReady(t, spec.LogPath)
	ch, err := r.Wait(context.Background(), spec.ID)
	if err != nil {
		t.Fatal(err)
	}

	old := r.Info().ManagedPID
	killed := time.Now()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitInfo(t, r, 20*time.Second, func(i Info) bool {
		return i.Connected && i.ManagedPID != 0 && i.ManagedPID != old
	})
	t.Logf("containerd restarted by Supervise %s after SIGKILL (pid %d → %d)", time.Since(killed), old, r.Info().ManagedPID)

	got, err := r.Status(context.Background(), spec.ID)
	if err != nil || got.PID != st.PID || got.State != goruntime.StateRunning {
		t.Fatalf("status after containerd restart = %+v, %v; want pid %d running", got, err, st.PID)
	}
	if err := syscall.Kill(int(st.PID), 0); err != nil {
		t.Fatalf("container process %d: %v", st.PID, err)
	}
	// The Wait begun before the daemon died still reports the exit.
	if _, err := r.Stop(context.Background(), spec.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, ch, 10*time.Second); e.Code != 0 {
		t.Fatalf("exit across the restart: code %d", e.Code)
	}
}

// waitInfo waits, without polling, until cond holds for r.Info().
func waitInfo(t *testing.T, r *Runtime, limit time.Duration, cond func(Info) bool) {
	t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		changed := r.infoChanged()
		if cond(r.Info()) {
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			t.Fatalf("info %+v: condition not met within %s", r.Info(), limit)
		}
	}
}

func TestStartReportsMissingBinary(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the root check comes first")
	}
	r := New(Options{Mode: ModeManaged, Binary: "containerd-not-installed", StateDir: t.TempDir(), SocketDir: t.TempDir()})
	defer r.Close()
	err := r.Start(context.Background())
	want := "containerd-not-installed not found in PATH: install it with `apt-get install -y containerd runc`"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

func TestStartShowsChildLog(t *testing.T) {
	requireHost(t)
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake-containerd")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho 'level=fatal msg=\"boom: config rejected\"' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sockDir, err := os.MkdirTemp("/tmp", "ctd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	r := New(Options{Mode: ModeManaged, Binary: fake, StateDir: dir, SocketDir: sockDir})
	defer r.Close()
	err = r.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "boom: config rejected") || !strings.Contains(err.Error(), "exited before serving") {
		t.Fatalf("err = %v", err)
	}
}

func TestNextDelay(t *testing.T) {
	var got []time.Duration
	var d time.Duration
	for range 9 {
		d = nextDelay(d, 0)
		got = append(got, d)
	}
	ms := time.Millisecond
	want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 6400 * ms, 10 * time.Second, 10 * time.Second}
	if !slices.Equal(got, want) {
		t.Fatalf("delays = %v, want %v", got, want)
	}
	if d := nextDelay(10*time.Second, 10*time.Second); d != 100*ms {
		t.Errorf("after a long healthy run: %s, want 100ms", d)
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Options
		mode Mode
		ok   bool
	}{
		{"zero", Options{}, ModeAuto, true},
		{"address implies external", Options{Address: "/x.sock"}, ModeExternal, true},
		{"external without address", Options{Mode: ModeExternal}, ModeExternal, false},
		{"managed with address", Options{Mode: ModeManaged, Address: "/x.sock"}, ModeManaged, false},
		{"unknown", Options{Mode: "docker"}, "docker", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.in.withDefaults()
			if o.Mode != tc.mode || o.Namespace != DefaultNamespace || o.SocketDir != DefaultSocketDir {
				t.Errorf("defaults = %+v", o)
			}
			if err := o.Validate(); (err == nil) != tc.ok {
				t.Errorf("validate = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestSpecOptions(t *testing.T) {
	s := &oci.Spec{Process: &specs.Process{Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 1024, Hard: 1024}}}}
	for _, o := range []oci.SpecOpts{
		WithRlimit("RLIMIT_NOFILE", 3_000_000, 3_000_000),
		WithRlimit("RLIMIT_NPROC", 10, 20),
		WithBindMounts([]goruntime.Mount{{Source: "/a", Destination: "/b", ReadOnly: true}, {Source: "/c", Destination: "/d"}}),
	} {
		if err := o(context.Background(), nil, nil, s); err != nil {
			t.Fatal(err)
		}
	}
	wantLimits := []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 3_000_000, Hard: 3_000_000}, {Type: "RLIMIT_NPROC", Soft: 10, Hard: 20}}
	if !slices.Equal(s.Process.Rlimits, wantLimits) {
		t.Errorf("rlimits = %+v", s.Process.Rlimits)
	}
	if len(s.Mounts) != 2 || !slices.Equal(s.Mounts[0].Options, []string{"rbind", "ro"}) || !slices.Equal(s.Mounts[1].Options, []string{"rbind", "rw"}) ||
		s.Mounts[0].Type != "bind" || s.Mounts[1].Destination != "/d" {
		t.Errorf("mounts = %+v", s.Mounts)
	}
	if err := validateSpec(goruntime.Spec{RootFS: "rel", LogPath: ""}); err == nil ||
		!strings.Contains(err.Error(), "empty id") || !strings.Contains(err.Error(), "no args") {
		t.Errorf("validateSpec of an empty spec: %v", err)
	}
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func BenchmarkRunStop(b *testing.B) {
	r := newManaged(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		spec, _ := tinySpec(b, fmt.Sprintf("bench-%d", i), "-sleep", "1h")
		if _, err := r.Run(ctx, spec); err != nil {
			b.Fatal(err)
		}
		waitReady(b, spec.LogPath)
		if _, err := r.Stop(ctx, spec.ID, 5*time.Second); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCloseLeavesContainersRunning: Close stops containerd but not the
// containers; a later managed Runtime on the same dirs (m3sup restarted)
// finds the container with the same PID.
func TestCloseLeavesContainersRunning(t *testing.T) {
	r1 := newManaged(t)
	spec, _ := tinySpec(t, "keep", "-sleep", "1h")
	ctx := context.Background()
	st, err := r1.Run(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := r1.Wait(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	if e := <-ch; !errors.Is(e.Err, errClosed) {
		t.Errorf("pending Wait after Close = %+v, want errClosed", e)
	}
	if err := syscall.Kill(int(st.PID), 0); err != nil {
		t.Fatalf("container process %d after Close: %v", st.PID, err)
	}

	opts := r1.opts
	opts.Logger = testLogger(t)
	r2 := New(opts)
	if err := r2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })
	t.Cleanup(func() { r2.Remove(context.Background(), spec.ID) })
	got, err := r2.Status(ctx, spec.ID)
	if err != nil || got.PID != st.PID || got.State != goruntime.StateRunning {
		t.Fatalf("status after managed restart = %+v, %v; want pid %d running", got, err, st.PID)
	}
}

// TestManagedReplacesStaleDaemon: a daemon left serving our socket (an
// earlier m3sup died without stopping it) is stopped and replaced.
func TestManagedReplacesStaleDaemon(t *testing.T) {
	r1 := newManaged(t) // no Supervise: its child is the "stale" one
	stale := r1.Info().ManagedPID
	opts := r1.opts
	opts.Logger = testLogger(t)
	r2 := New(opts)
	if err := r2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })
	if pid := r2.Info().ManagedPID; pid == stale || pid == 0 {
		t.Fatalf("new managed pid %d, stale %d", pid, stale)
	}
	if err := syscall.Kill(stale, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("stale containerd %d still runs: %v", stale, err)
	}
}

// TestSuperviseExternalRecordsConnection: in external mode Supervise notices
// the daemon going away and coming back.
func TestSuperviseExternalRecordsConnection(t *testing.T) {
	r1 := newManaged(t)
	r2 := New(Options{Address: r1.Info().Address, Namespace: testNamespace, Logger: testLogger(t)})
	if err := r2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })
	r2.pingEvery = 100 * time.Millisecond
	supervise(t, r2)

	if err := syscall.Kill(r1.Info().ManagedPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitInfo(t, r2, 5*time.Second, func(i Info) bool { return !i.Connected })

	opts := r1.opts
	opts.Logger = testLogger(t)
	r3 := New(opts)
	if err := r3.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r3.Close() })
	waitInfo(t, r2, 5*time.Second, func(i Info) bool { return i.Connected })
	if _, err := r2.List(context.Background()); err != nil {
		t.Fatalf("list after the daemon came back: %v", err)
	}
}
