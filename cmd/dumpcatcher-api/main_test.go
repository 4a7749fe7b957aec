package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := write("bad.yaml", `
destinations:
- name: Default
  url: s3://AKIA:secret@bucket/x
- name: nas
  url: file:///mnt/dumps
  credentialsDir: /x
- name: nas
  url: file:///mnt/other
presign:
  expiry: 720h
  enbled: true
`)
	_, _, _, _, err := parse([]string{"--config", bad}, &bytes.Buffer{})
	if err == nil {
		t.Fatal("parse accepted a bad config")
	}
	for _, want := range []string{
		"config " + bad + ": destinations[0].name: \"Default\" is not a DNS label",
		"destinations[0].url: ",
		"destinations[1].credentialsDir: only s3:// destinations have credentials",
		"destinations[2].name: \"nas\" is the name of an earlier destination",
		"presign.expiry: want 1s to 168h",
		"presign.enbled: unknown field",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%s", want, err)
		}
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("error echoes the URL's secret:\n%s", err)
	}

	if _, _, _, _, err := parse(nil, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--config: required") {
		t.Errorf("no --config: %v", err)
	}
	if _, _, _, _, err := parse([]string{"--config", write("empty.yaml", "")}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "destinations: at least one destination") {
		t.Errorf("empty config: %v", err)
	}
	good := write("good.yaml", "destinations:\n- name: default\n  url: file:///mnt/dumps\npresign:\n  enabled: false\n")
	o, c, _, _, err := parse([]string{"--config", good, "--secure-port", "8443"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.SecureServing.BindPort != 8443 || len(c.Destinations) != 1 || c.PresignExpiry() != 0 {
		t.Errorf("parsed %+v %+v", o.SecureServing, c)
	}
	var out bytes.Buffer
	if err := run([]string{"--version"}, &out, &out); err != nil || strings.TrimSpace(out.String()) != "dev" {
		t.Errorf("--version: %q, %v", out.String(), err)
	}
}
