package systemd

import (
	"strings"
	"testing"
)

func TestUnitDirectives(t *testing.T) {
	unit := Unit(UnitOptions{BinaryPath: "/opt/m3sup/bin/m3sup", ExtraArgs: []string{"--log-format", "json"}})
	lines := map[string]bool{}
	for _, l := range strings.Split(unit, "\n") {
		lines[l] = true
	}
	for _, want := range []string{
		"[Unit]",
		"Documentation=" + DocumentationURL,
		"Wants=network-online.target",
		"After=network-online.target containerd.service",
		"[Service]",
		"Type=notify",
		"NotifyAccess=main",
		"ExecStart=/opt/m3sup/bin/m3sup run --config /etc/m3sup/m3sup.yaml --keep-running --log-format json",
		"Restart=always",
		"RestartSec=5s",
		"RestartPreventExitStatus=4",
		"KillMode=process",
		"Delegate=yes",
		"LimitNOFILE=3000000",
		"LimitNPROC=infinity",
		"LimitCORE=0",
		"TasksMax=infinity",
		"WatchdogSec=60s",
		"TimeoutStartSec=15min",
		"TimeoutStopSec=2min",
		"[Install]",
		"WantedBy=multi-user.target",
	} {
		t.Run(want, func(t *testing.T) {
			if !lines[want] {
				t.Errorf("unit lacks the line %q:\n%s", want, unit)
			}
		})
	}
}

func TestUnitDefaultsAndQuoting(t *testing.T) {
	tests := []struct {
		name string
		opts UnitOptions
		want string
	}{
		{"defaults", UnitOptions{}, "ExecStart=/usr/local/bin/m3sup run --config /etc/m3sup/m3sup.yaml --keep-running\n"},
		{"space", UnitOptions{BinaryPath: "/opt/my m3sup/m3sup"}, `ExecStart="/opt/my m3sup/m3sup" run`},
		{"specifiers", UnitOptions{ConfigPath: "/etc/m3sup/100%$x.yaml"}, "--config /etc/m3sup/100%%$$x.yaml "},
		{"quote", UnitOptions{ExtraArgs: []string{`a"b`}}, `--keep-running "a\"b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if u := Unit(tt.opts); !strings.Contains(u, tt.want) {
				t.Errorf("unit lacks %q:\n%s", tt.want, u)
			}
		})
	}
}
