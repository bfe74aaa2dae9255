package systemd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/m3sup/m3sup/supervisor/config"
)

// fakeSystemctl records the commands it is asked to run.
type fakeSystemctl struct {
	calls [][]string
	fail  string // fail the command whose first word is this
}

func (f *fakeSystemctl) run(_ context.Context, args ...string) error {
	f.calls = append(f.calls, args)
	if len(args) > 0 && args[0] == f.fail {
		return errors.New("boom")
	}
	return nil
}

func bootSystemd(t *testing.T, root string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, "run/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func hasNote(res Result, sub string) bool {
	return slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, sub) })
}

func TestInstallWithoutSystemd(t *testing.T) {
	root := t.TempDir()
	sc := &fakeSystemctl{}
	res, err := Install(context.Background(), InstallOptions{Root: root, BinaryPath: "/usr/bin/m3sup", Enable: true, Now: true, Systemctl: sc.run})
	if err != nil {
		t.Fatal(err)
	}
	if res.UnitPath != filepath.Join(root, "etc/systemd/system/m3sup.service") || !res.UnitChanged {
		t.Errorf("unit: %s changed=%v", res.UnitPath, res.UnitChanged)
	}
	if got := readFile(t, res.UnitPath); got != Unit(UnitOptions{BinaryPath: "/usr/bin/m3sup"}) {
		t.Errorf("unit content:\n%s", got)
	}
	if !res.ConfigWritten || readFile(t, filepath.Join(root, "etc/m3sup/m3sup.yaml")) != DefaultConfig {
		t.Errorf("default config not written: %+v", res)
	}
	assertPerm(t, filepath.Join(root, "etc/m3sup/m3sup.yaml"), 0o600)
	if res.SystemdRunning || len(sc.calls) > 0 {
		t.Errorf("systemd absent, yet running=%v calls=%v", res.SystemdRunning, sc.calls)
	}
	want := "systemd is not running on this host: start m3sup with `/usr/bin/m3sup run --config /etc/m3sup/m3sup.yaml`"
	if res.Notes[len(res.Notes)-1] != want {
		t.Errorf("last note %q, want %q", res.Notes[len(res.Notes)-1], want)
	}
	if !hasNote(res, "not enabled or started") {
		t.Errorf("notes do not say --enable/--now were skipped: %q", res.Notes)
	}
	entries, _ := os.ReadDir(filepath.Join(root, "etc/m3sup"))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestInstallKeepsConfigAndReportsUnitChanges(t *testing.T) {
	root := t.TempDir()
	cfg := filepath.Join(root, "etc/m3sup/m3sup.yaml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("dataDir: /srv/m3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := InstallOptions{Root: root, Config: []byte("dataDir: /elsewhere\n")}
	res, err := Install(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.ConfigWritten || readFile(t, cfg) != "dataDir: /srv/m3\n" || !hasNote(res, "kept the existing") {
		t.Errorf("existing config overwritten or not reported: %+v", res)
	}
	res, err = Install(context.Background(), opts)
	if err != nil || res.UnitChanged || !hasNote(res, "up to date") {
		t.Errorf("second identical install: changed=%v err=%v notes=%q", res.UnitChanged, err, res.Notes)
	}
	opts.BinaryPath = "/opt/m3sup"
	if res, err = Install(context.Background(), opts); err != nil || !res.UnitChanged {
		t.Errorf("new binary path: changed=%v err=%v", res.UnitChanged, err)
	}
	if !strings.Contains(readFile(t, res.UnitPath), "ExecStart=/opt/m3sup run") {
		t.Error("unit not rewritten")
	}
}

func TestInstallCustomConfigIsWritten(t *testing.T) {
	root := t.TempDir()
	res, err := Install(context.Background(), InstallOptions{Root: root, ConfigPath: "/srv/m3sup.yaml", Config: []byte("log: {level: debug}\n")})
	if err != nil {
		t.Fatal(err)
	}
	if readFile(t, filepath.Join(root, "srv/m3sup.yaml")) != "log: {level: debug}\n" {
		t.Error("custom config not written")
	}
	// It may hold registry passwords: only root reads it.
	assertPerm(t, filepath.Join(root, "srv/m3sup.yaml"), 0o600)
	if !strings.Contains(readFile(t, res.UnitPath), "--config /srv/m3sup.yaml") {
		t.Error("unit does not point at the custom config")
	}
}

func TestInstallWithSystemd(t *testing.T) {
	tests := []struct {
		name        string
		enable, now bool
		want        [][]string
	}{
		{"install only", false, false, [][]string{{"daemon-reload"}}},
		{"enable", true, false, [][]string{{"daemon-reload"}, {"enable", UnitName}}},
		{"now", false, true, [][]string{{"daemon-reload"}, {"start", "--no-block", UnitName}}},
		{"enable now", true, true, [][]string{{"daemon-reload"}, {"enable", "--now", "--no-block", UnitName}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			bootSystemd(t, root)
			sc := &fakeSystemctl{}
			res, err := Install(context.Background(), InstallOptions{Root: root, Enable: tt.enable, Now: tt.now, Systemctl: sc.run})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(sc.calls, tt.want) {
				t.Errorf("systemctl calls %v, want %v", sc.calls, tt.want)
			}
			if !res.SystemdRunning || !res.Reloaded || len(res.Commands) != len(tt.want) {
				t.Errorf("result %+v", res)
			}
		})
	}
}

func TestInstallSystemctlFailure(t *testing.T) {
	root := t.TempDir()
	bootSystemd(t, root)
	sc := &fakeSystemctl{fail: "enable"}
	_, err := Install(context.Background(), InstallOptions{Root: root, Enable: true, Systemctl: sc.run})
	if err == nil || !strings.Contains(err.Error(), "systemctl enable m3sup.service: boom") {
		t.Errorf("err = %v", err)
	}
}

func TestUninstall(t *testing.T) {
	tests := []struct {
		name    string
		systemd bool
		purge   bool
	}{
		{"keep, no systemd", false, false},
		{"purge, no systemd", false, true},
		{"keep, systemd", true, false},
		{"purge, systemd", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if tt.systemd {
				bootSystemd(t, root)
			}
			sc := &fakeSystemctl{}
			if _, err := Install(context.Background(), InstallOptions{Root: root, Systemctl: sc.run}); err != nil {
				t.Fatal(err)
			}
			data := filepath.Join(root, "var/lib/m3sup")
			if err := os.MkdirAll(filepath.Join(data, "etcd"), 0o700); err != nil {
				t.Fatal(err)
			}
			sc.calls = nil
			res, err := Uninstall(context.Background(), UninstallOptions{Root: root, Purge: tt.purge, Systemctl: sc.run})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(res.UnitPath); !os.IsNotExist(err) {
				t.Errorf("unit still there: %v", err)
			}
			var want [][]string
			if tt.systemd {
				want = [][]string{{"disable", "--now", UnitName}, {"daemon-reload"}}
			}
			if !reflect.DeepEqual(sc.calls, want) {
				t.Errorf("systemctl calls %v, want %v", sc.calls, want)
			}
			cfgDir := filepath.Join(root, "etc/m3sup")
			for _, dir := range []string{cfgDir, data} {
				_, err := os.Stat(dir)
				if tt.purge != os.IsNotExist(err) {
					t.Errorf("%s: purge=%v but stat err=%v", dir, tt.purge, err)
				}
				if !tt.purge && (!slices.Contains(res.Kept, dir) || !hasNote(res, "kept "+dir)) {
					t.Errorf("%s kept but not reported: %+v", dir, res)
				}
				if tt.purge && !slices.Contains(res.Removed, dir) {
					t.Errorf("%s removed but not reported: %+v", dir, res)
				}
			}
			if !tt.systemd && !hasNote(res, "systemd is not running") {
				t.Errorf("notes %q", res.Notes)
			}
		})
	}
}

func TestUninstallNothingInstalled(t *testing.T) {
	root := t.TempDir()
	bootSystemd(t, root)
	sc := &fakeSystemctl{}
	res, err := Uninstall(context.Background(), UninstallOptions{Root: root, Systemctl: sc.run})
	if err != nil || len(sc.calls) != 0 || !hasNote(res, "was not installed") {
		t.Errorf("err=%v calls=%v notes=%q", err, sc.calls, res.Notes)
	}
}

// The default config must be one `m3sup run --config` accepts.
func TestDefaultConfigLoads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m3sup.yaml")
	if err := os.WriteFile(path, []byte(DefaultConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != DefaultDataDir {
		t.Errorf("dataDir %q", cfg.DataDir)
	}
}

func assertPerm(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s has mode %v, want %v", path, got, want)
	}
}
