package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
)

func TestParseDump(t *testing.T) {
	shared := t.TempDir()
	for _, d := range []string{"bin", "dumps"} {
		if err := os.MkdirAll(filepath.Join(shared, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	self := filepath.Join(shared, "bin", "dumpcatcher")
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	// The hook exactly as the webhook writes it.
	hook := []string{"--reason=prestop", "--policy=on-pressure", "--dir=" + filepath.Join(shared, "dumps"), "--container=app",
		"--namespace=shop", "--workload=deployment/web", "--grace-period=60", `--then={"sleep":{"seconds":5}}`}
	o, timeout, err := parseDump(hook, &bytes.Buffer{}, self, now)
	if err != nil {
		t.Fatal(err)
	}
	if o.Reason != contract.ReasonPreStop || o.Policy != contract.PolicyOnPressure || !o.Deadline.Equal(now.Add(time.Minute)) || timeout != 0 || o.Then == "" {
		t.Errorf("hook options: %+v timeout %v", o, timeout)
	}
	// By hand: defaults next to the binary, manual, always, a timeout.
	o, timeout, err = parseDump(nil, &bytes.Buffer{}, self, now)
	if err != nil {
		t.Fatal(err)
	}
	if o.Dir != filepath.Join(shared, "dumps") || o.Reason != contract.ReasonManual || o.Policy != contract.PolicyAlways || timeout != 5*time.Minute || !o.Deadline.IsZero() {
		t.Errorf("manual options: %+v timeout %v", o, timeout)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--reason=oom"}, `--reason: "oom" is not prestop or manual`},
		{[]string{"--grace-period=-1"}, "--grace-period: -1 is negative"},
		{[]string{"--pid=abc"}, `--pid: "abc" is not a process id`},
		{[]string{"--dir=/nonexistent"}, "is not a directory (is this container injected by dumpcatcher?)"},
		{[]string{"--pressure-old-gen=2"}, "shares between 0 and 1"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	} {
		if _, _, err := parseDump(tc.args, &bytes.Buffer{}, self, now); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseDump(%v) = %v, want %q", tc.args, err, tc.want)
		}
	}
}
