package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/m3sup/m3sup/internal/e2etest"
)

// m3supBin is the m3sup binary under test: $M3SUP_BIN, or the one TestMain
// builds. It is empty when the host cannot run the tests (needE2E skips).
var m3supBin string

// TestMain builds m3sup once for every test, into a temporary directory it
// removes afterwards; with -race when this test binary has it. It builds
// nothing when M3SUP_BIN names a binary or when the host lacks what the
// tests need (they skip then, or fail under CI).
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	m3supBin = os.Getenv("M3SUP_BIN")
	if m3supBin != "" && !filepath.IsAbs(m3supBin) {
		// go test runs this binary in e2e/, not where M3SUP_BIN was set.
		fmt.Fprintf(os.Stderr, "e2e: M3SUP_BIN=%s: want an absolute path\n", m3supBin)
		return 2
	}
	if m3supBin == "" && len(e2etest.Missing("")) == 0 {
		dir, err := os.MkdirTemp("", "m3sup-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		mod, err := e2etest.ModuleDir()
		if err == nil {
			m3supBin = filepath.Join(dir, "m3sup")
			err = e2etest.Build(mod, m3supBin, "./cmd/m3sup", e2etest.BuildOptions{Race: e2etest.Race})
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: build m3sup: %v\n", err)
			return 1
		}
	}
	return m.Run()
}

// m3sup is a command running the m3sup binary under test with args.
func m3sup(args ...string) *exec.Cmd {
	return exec.Command(m3supBin, args...)
}

// e2eEnv holds what every end-to-end test needs: root, containerd, runc and
// a real M3 release tarball (make e2e builds it and sets M3SUP_E2E_RELEASE).
// Without them the tests skip, except under CI where they fail.
type e2eEnv struct {
	tarball string
	digest  string
}

func needE2E(t testing.TB) e2eEnv {
	t.Helper()
	if missing := e2etest.Missing("run `make e2e`"); len(missing) > 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("end-to-end test needs %s", strings.Join(missing, ", "))
		}
		t.Skipf("end-to-end test needs %s", strings.Join(missing, ", "))
	}
	tarball, digest, err := e2etest.Release()
	if err != nil {
		t.Fatal(err)
	}
	return e2eEnv{tarball: tarball, digest: digest}
}
