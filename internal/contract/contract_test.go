package contract

import (
	"testing"
	"time"
)

func TestDumpFileNames(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for _, tt := range []struct{ name, reason string }{
		{DumpFileName(ReasonPreStop, at, 1), ReasonPreStop},
		{DumpFileName(ReasonManual, at, 42), ReasonManual},
		{"java_pid1.hprof", ReasonOOM},
		{"java_pid7.hprof.gz", ReasonOOM},
		{"prestopish.hprof", ReasonOOM},
	} {
		if got := ReasonOf(tt.name); got != tt.reason {
			t.Errorf("ReasonOf(%q) = %q, want %q", tt.name, got, tt.reason)
		}
	}
	for in, want := range map[string]string{
		DumpFileName(ReasonManual, at, 42): "pid42.hprof",
		"java_pid1.hprof":                  "java_pid1.hprof",
		"prestop-notatime-pid1.hprof":      "prestop-notatime-pid1.hprof",
	} {
		if got := ShortName(in); got != want {
			t.Errorf("ShortName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := DumpFileName(ReasonManual, at, 42); got != "manual-20261123T100000.000Z-pid42.hprof" {
		t.Errorf("DumpFileName = %q", got)
	}
}
