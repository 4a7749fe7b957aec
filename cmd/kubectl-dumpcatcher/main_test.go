package main

import (
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{args: []string{"frobnicate"}, wantErr: `unknown command "frobnicate" for "kubectl dumpcatcher"`},
		{args: []string{"list", "--reason", "boom"}, wantErr: `--reason "boom" is not one of`},
		{args: []string{"download"}, wantErr: "accepts 1 arg(s), received 0"},
	} {
		err := run(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("run(%q) = %v, want an error containing %q", tc.args, err, tc.wantErr)
		}
	}
}
