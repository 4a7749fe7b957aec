package contract

import (
	"strings"
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
		{CrashLogName(1), ReasonCrash},
		{"hs_err_pid4194304.log.gz", ReasonCrash},
		{"hs_err_pid.log", ReasonOOM},
		{"hs_err_pid12x.log", ReasonOOM},
		{"hs_err_pid12.log.txt", ReasonOOM},
		{"xhs_err_pid12.log", ReasonOOM},
		{CoreFileName(at, "java", 7), ReasonCore},
		{CoreFileName(at, "my-app/../x", 7) + ".gz", ReasonCore},
		{"core-20261123T100000.000Z-a-b-7.core", ReasonOOM},
		{"core-notatime-app-7.core", ReasonOOM},
		{"core-20261123T100000.000Z-app-.core", ReasonOOM},
		{"core-20261123T100000.000Z-app-7.hprof", ReasonOOM},
		{"core", ReasonOOM},
		{"core.1234", ReasonOOM},
	} {
		if got := ReasonOf(tt.name); got != tt.reason {
			t.Errorf("ReasonOf(%q) = %q, want %q", tt.name, got, tt.reason)
		}
	}
	for in, want := range map[string]string{
		DumpFileName(ReasonManual, at, 42): "pid42.hprof",
		"java_pid1.hprof":                  "java_pid1.hprof",
		"prestop-notatime-pid1.hprof":      "prestop-notatime-pid1.hprof",
		"hs_err_pid1.log":                  "hs_err_pid1.log",
		CoreFileName(at, "java", 7):        "java-7.core",
	} {
		if got := ShortName(in); got != want {
			t.Errorf("ShortName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := DumpFileName(ReasonManual, at, 42); got != "manual-20261123T100000.000Z-pid42.hprof" {
		t.Errorf("DumpFileName = %q", got)
	}
}

func TestCoreFileName(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 5e6, time.FixedZone("CET", 3600))
	for _, tt := range []struct {
		exe, name, parsedExe string
	}{
		{"java", "core-20261123T090000.005Z-java-42.core", "java"},
		{"my-app", "core-20261123T090000.005Z-my_app-42.core", "my_app"},
		{"../../etc/x", "core-20261123T090000.005Z-.._.._etc_x-42.core", ".._.._etc_x"},
		{"", "core-20261123T090000.005Z-_-42.core", "_"},
		{strings.Repeat("x", 100), "core-20261123T090000.005Z-" + strings.Repeat("x", 64) + "-42.core", strings.Repeat("x", 64)},
		{"a b\x00\n", "core-20261123T090000.005Z-a_b__-42.core", "a_b__"},
	} {
		name := CoreFileName(at, tt.exe, 42)
		if name != tt.name {
			t.Errorf("CoreFileName(%q) = %q, want %q", tt.exe, name, tt.name)
		}
		gotAt, exe, pid, ok := ParseCoreFileName(name)
		if !ok || !gotAt.Equal(at) || exe != tt.parsedExe || pid != 42 {
			t.Errorf("ParseCoreFileName(%q) = %v %q %d %v", name, gotAt, exe, pid, ok)
		}
	}
}

func TestErrorFileOption(t *testing.T) {
	if got, want := ErrorFileOption("/dumpcatcher/dumps"), "-XX:ErrorFile=/dumpcatcher/dumps/hs_err_pid%p.log"; got != want {
		t.Errorf("ErrorFileOption = %q, want %q", got, want)
	}
}
