package config

import (
	"reflect"
	"testing"
)

func TestLoadImagesAndRegistries(t *testing.T) {
	f := writeFile(t, "images.yaml", `
dbnode:
  image: 127.0.0.1:5000/m3db/m3dbnode:v1.5.0
coordinator:
  image: quay.io/m3db/m3coordinator:v1.5.0
registries:
  "127.0.0.1:5000":
    insecurePlainHTTP: true
  quay.io:
    mirrors: [mirror.example.com/quay, "127.0.0.1:5000"]
    username: robot
    passwordFile: /etc/m3sup/quay.password
    ca: /etc/m3sup/quay-ca.pem
`)
	c, err := load(noEnv, []string{f})
	if err != nil {
		t.Fatal(err)
	}
	if c.DBNode.Image != "127.0.0.1:5000/m3db/m3dbnode:v1.5.0" || c.Coordinator.Image != "quay.io/m3db/m3coordinator:v1.5.0" {
		t.Fatalf("images: %q, %q", c.DBNode.Image, c.Coordinator.Image)
	}
	want := map[string]Registry{
		"127.0.0.1:5000": {InsecurePlainHTTP: true},
		"quay.io": {Mirrors: []string{"mirror.example.com/quay", "127.0.0.1:5000"}, Username: "robot",
			PasswordFile: "/etc/m3sup/quay.password", CA: "/etc/m3sup/quay-ca.pem"},
	}
	if !reflect.DeepEqual(c.Registries, want) {
		t.Fatalf("registries: %+v\nwant %+v", c.Registries, want)
	}
	// config print reads back to the same config.
	b, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	again, err := load(noEnv, []string{writeFile(t, "again.yaml", string(b))})
	if err != nil {
		t.Fatalf("reload printed config: %v\n%s", err, b)
	}
	if !reflect.DeepEqual(again.Registries, c.Registries) || again.DBNode.Image != c.DBNode.Image {
		t.Fatalf("round trip changed the config:\n%s", b)
	}
}

func TestLoadRegistryErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		wants      []string
	}{
		{"unknown key", "registries:\n  quay.io:\n    insecurePlainHttp: true\n", []string{"bad.yaml", `unknown field "registries.quay.io.insecurePlainHttp"`, `did you mean "registries.quay.io.insecurePlainHTTP"`}},
		{"wrong type", "registries:\n  quay.io:\n    mirrors: one\n", []string{"registries.quay.io.mirrors", "as a list"}},
		{"not a mapping", "registries: [quay.io]\n", []string{"registries", "as a mapping"}},
		{"bad image", "dbnode:\n  image: m3db/m3dbnode\n", []string{"bad.yaml", "dbnode.image", "full image reference"}},
		{"bad host", "registries:\n  https://quay.io: {}\n", []string{`registries.https://quay.io`, "no scheme"}},
		{"mirror with scheme", "registries:\n  quay.io:\n    mirrors: [\"http://127.0.0.1:5000\"]\n", []string{"registries.quay.io.mirrors[0]", "insecurePlainHTTP"}},
		{"password twice", "registries:\n  quay.io:\n    username: u\n    password: p\n    passwordFile: /p\n", []string{"registries.quay.io.passwordFile", "not both"}},
		{"password without user", "registries:\n  quay.io:\n    password: p\n", []string{"registries.quay.io.username", "must be set"}},
		{"relative files", "registries:\n  quay.io:\n    username: u\n    passwordFile: p\n    ca: ca.pem\n", []string{"registries.quay.io.passwordFile", "registries.quay.io.ca", "absolute"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(noEnv, []string{writeFile(t, "bad.yaml", tc.body)})
			wantErr(t, err, tc.wants...)
		})
	}
}
