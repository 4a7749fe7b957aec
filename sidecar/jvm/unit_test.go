package jvm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeProc builds a procfs-like tree.
type fakeProc struct {
	t    *testing.T
	root string
}

func newFakeProc(t *testing.T) *fakeProc { return &fakeProc{t: t, root: t.TempDir()} }

func (f *fakeProc) add(pid int, state string, uid, nspid int, argv []string, exe, maps string) {
	dir := filepath.Join(f.root, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	ns := strconv.Itoa(pid)
	if nspid != 0 {
		ns += "\t" + strconv.Itoa(nspid)
	}
	u := strconv.Itoa(uid)
	status := "Name:\tx\nState:\t" + state + "\nPPid:\t1\nUid:\t" + u + "\t" + u + "\t" + u + "\t" + u +
		"\nGid:\t" + u + "\t" + u + "\t" + u + "\t" + u + "\nNSpid:\t" + ns + "\nSigCgt:\t0000000000000004\n"
	cmdline := ""
	for _, a := range argv {
		cmdline += a + "\x00"
	}
	for name, content := range map[string]string{"status": status, "cmdline": cmdline, "maps": maps} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			f.t.Fatal(err)
		}
	}
	if exe != "" {
		if err := os.Symlink(exe, filepath.Join(dir, "exe")); err != nil {
			f.t.Fatal(err)
		}
	}
	// In this process's mount namespace, like every process of its
	// container.
	if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Symlink("/proc/self/ns/mnt", filepath.Join(dir, "ns", "mnt")); err != nil {
		f.t.Fatal(err)
	}
}

// otherNS puts the fake process pid into another mount namespace: ns names
// a file that stands in for it, "" makes it unreadable.
func (f *fakeProc) otherNS(pid int, ns string) {
	mnt := filepath.Join(f.root, strconv.Itoa(pid), "ns", "mnt")
	if err := os.Remove(mnt); err != nil {
		f.t.Fatal(err)
	}
	if ns == "" {
		return // unreadable
	}
	if err := os.Symlink(ns, mnt); err != nil {
		f.t.Fatal(err)
	}
}

func TestFindJVMsFake(t *testing.T) {
	f := newFakeProc(t)
	f.add(1, "S (sleeping)", 1000, 0, []string{"/bin/sh", "-c", "java -jar app.jar"}, "/bin/dash", "")
	f.add(7, "S (sleeping)", 1000, 1, []string{"/opt/java/bin/java", "-Xmx1g", "-jar", "app.jar"}, "", "")
	f.add(8, "S (sleeping)", 0, 0, []string{"app-launcher"}, "/usr/lib/jvm/x/bin/java", "")
	f.add(9, "S (sleeping)", 0, 0, []string{"embedded"}, "/usr/bin/embedded",
		"7f00-7f01 r-xp 00000000 08:01 42 /usr/lib/jvm/x/lib/server/libjvm.so\n")
	f.add(10, "Z (zombie)", 0, 0, []string{"java"}, "", "")
	f.add(11, "S (sleeping)", 0, 0, nil, "", "") // kernel thread
	f.add(os.Getpid(), "R (running)", 0, 0, []string{"java"}, "", "")
	// JVMs of other containers: their mount namespace is another one, or
	// cannot be read.
	f.add(12, "S (sleeping)", 0, 0, []string{"java"}, "", "")
	f.otherNS(12, "")
	f.add(13, "S (sleeping)", 0, 0, []string{"java"}, "", "")
	f.otherNS(13, filepath.Join(f.root, "13", "status"))
	if err := os.WriteFile(filepath.Join(f.root, "uptime"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	got, err := FindJVMs(f.root)
	if err != nil {
		t.Fatal(err)
	}
	want := []Process{
		{PID: 7, NSPID: 1, PPID: 1, UID: 1000, GID: 1000, Cmdline: []string{"/opt/java/bin/java", "-Xmx1g", "-jar", "app.jar"}, ProcRoot: f.root},
		{PID: 8, NSPID: 8, PPID: 1, Cmdline: []string{"app-launcher"}, ProcRoot: f.root},
		{PID: 9, NSPID: 9, PPID: 1, Cmdline: []string{"embedded"}, ProcRoot: f.root},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("FindJVMs (-want +got):\n%s", d)
	}

	// No JVM at all: an empty list, no error.
	f2 := newFakeProc(t)
	f2.add(1, "S (sleeping)", 0, 0, []string{"/bin/sh"}, "/bin/dash", "")
	if got, err := FindJVMs(f2.root); err != nil || len(got) != 0 {
		t.Errorf("FindJVMs without JVMs: %v, %v", got, err)
	}
	if _, err := FindJVMs(filepath.Join(f2.root, "missing")); err == nil {
		t.Error("FindJVMs of a missing procfs: no error")
	}
	if _, err := Lookup(f2.root, 42); !errors.Is(err, ErrProcessGone) {
		t.Errorf("Lookup of a missing pid: %v", err)
	}
}

// TestFindJVMsReal: a process that is not Java is not listed.
func TestFindJVMsReal(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	jvms, err := FindJVMs("")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range jvms {
		if p.PID == cmd.Process.Pid || p.PID == os.Getpid() {
			t.Errorf("listed %v", p)
		}
	}
	if _, err := Attach(context.Background(), Process{PID: 1 << 30, NSPID: 1 << 30}); !errors.Is(err, ErrProcessGone) {
		t.Errorf("Attach to a missing pid: %v", err)
	}
}

func TestRequest(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		args []string
		want string
	}{
		{"properties", nil, "1\x00properties\x00\x00\x00\x00"},
		{"jcmd", []string{"VM.version"}, "1\x00jcmd\x00VM.version\x00\x00\x00"},
		{"dumpheap", []string{"/d/x.hprof", "-live", ""}, "1\x00dumpheap\x00/d/x.hprof\x00-live\x00\x00"},
		{"dumpheap", []string{"/d/x.hprof", "-all", "1"}, "1\x00dumpheap\x00/d/x.hprof\x00-all\x001\x00"},
	} {
		got, err := request(tc.cmd, tc.args)
		if err != nil || string(got) != tc.want {
			t.Errorf("request(%q, %q) = %q, %v; want %q", tc.cmd, tc.args, got, err, tc.want)
		}
	}
	for _, bad := range [][]string{{"a", "b", "c", "d"}, {"a\x00b"}, {strings.Repeat("x", maxArgLen+1)}} {
		if _, err := request("jcmd", bad); err == nil {
			t.Errorf("request(%q): no error", bad)
		}
	}
	if _, err := request("", nil); err == nil {
		t.Error("empty command: no error")
	}
}

func TestJVMOptions(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want []string
	}{
		{[]string{"java", "-Xmx1g", "-cp", "-XX:+NotAnOption", "Main", "-XX:+DisableAttachMechanism"}, []string{"-Xmx1g"}},
		{[]string{"java", "-XX:+DisableAttachMechanism", "-jar", "app.jar", "-Xrs"}, []string{"-XX:+DisableAttachMechanism"}},
		{[]string{"java", "--module-path", "mods", "-Xrs", "--module=app/Main"}, []string{"-Xrs"}},
		{[]string{"java"}, nil},
	} {
		if got := jvmOptions(tc.argv); !cmp.Equal(got, tc.want) {
			t.Errorf("jvmOptions(%q) = %q, want %q", tc.argv, got, tc.want)
		}
	}
}

func TestLastFlag(t *testing.T) {
	f := newFakeProc(t)
	f.add(5, "S (sleeping)", 0, 0, []string{"java", "-XX:-DisableAttachMechanism", "Main"}, "", "")
	env := "JAVA_TOOL_OPTIONS=-XX:+DisableAttachMechanism\x00_JAVA_OPTIONS=-Xrs -XX:-UsePerfData\x00"
	if err := os.WriteFile(filepath.Join(f.root, "5", "environ"), []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Lookup(f.root, 5)
	if err != nil {
		t.Fatal(err)
	}
	// The command line beats JAVA_TOOL_OPTIONS.
	if off, where := attachDisabled(p); off {
		t.Errorf("attachDisabled = true (%s)", where)
	}
	if where := reducedSignals(p); where != "-Xrs or -XX:+ReduceSignalUsage in _JAVA_OPTIONS" {
		t.Errorf("reducedSignals = %q", where)
	}
	ok, err := catchesSIGQUIT(p)
	if err != nil || !ok {
		t.Errorf("catchesSIGQUIT = %v, %v", ok, err)
	}
}

// perfFile builds an hsperfdata file.
type perfFile struct {
	order   binary.ByteOrder
	entries bytes.Buffer
	n       int
}

func (f *perfFile) add(name string, typ byte, units Units, v Variability, value any) {
	var data []byte
	vec := 0
	switch x := value.(type) {
	case int64:
		data = make([]byte, 8)
		f.order.PutUint64(data, uint64(x))
	case string:
		data = append([]byte(x), 0)
		vec = len(data)
	}
	nameB := append([]byte(name), 0)
	for (entryHeaderLen+len(nameB))%8 != 0 {
		nameB = append(nameB, 0)
	}
	length := entryHeaderLen + len(nameB) + len(data)
	for length%8 != 0 {
		data = append(data, 0)
		length++
	}
	h := make([]byte, entryHeaderLen)
	f.order.PutUint32(h[0:], uint32(length))
	f.order.PutUint32(h[4:], entryHeaderLen)
	f.order.PutUint32(h[8:], uint32(vec))
	h[12], h[13], h[14], h[15] = typ, 0, byte(units), byte(v)
	f.order.PutUint32(h[16:], uint32(entryHeaderLen+len(nameB)))
	f.entries.Write(h)
	f.entries.Write(nameB)
	f.entries.Write(data)
	f.n++
}

func (f *perfFile) bytes() []byte {
	p := make([]byte, prologueLen)
	binary.BigEndian.PutUint32(p, perfMagic)
	if f.order == binary.LittleEndian {
		p[4] = 1
	}
	p[5], p[6], p[7] = 2, 0, 1
	f.order.PutUint32(p[8:], uint32(prologueLen+f.entries.Len()))
	f.order.PutUint32(p[24:], prologueLen)
	f.order.PutUint32(p[28:], uint32(f.n))
	b := append(p, f.entries.Bytes()...)
	return append(b, make([]byte, 256)...) // the unused rest of the region
}

func testPerfFile(order binary.ByteOrder, oldUsed int64, gcTicks int64) []byte {
	f := &perfFile{order: order}
	f.add("sun.os.hrt.frequency", 'J', UnitsHertz, Constant, int64(1_000_000_000))
	f.add("sun.os.hrt.ticks", 'J', UnitsTicks, Monotonic, int64(100_000_000_000))
	f.add("sun.gc.policy.name", 'B', UnitsString, Constant, "GarbageFirst")
	f.add("sun.gc.lastCause", 'B', UnitsString, Variable, "G1 Evacuation Pause")
	f.add("sun.gc.collector.0.time", 'J', UnitsTicks, Monotonic, gcTicks)
	f.add("sun.gc.collector.0.invocations", 'J', UnitsEvents, Monotonic, int64(12))
	f.add("sun.gc.collector.1.time", 'J', UnitsTicks, Monotonic, int64(0))
	f.add("sun.gc.collector.1.invocations", 'J', UnitsEvents, Monotonic, int64(0))
	f.add("sun.gc.generation.1.space.0.used", 'J', UnitsBytes, Variable, oldUsed)
	f.add("sun.gc.generation.1.space.0.capacity", 'J', UnitsBytes, Variable, int64(60<<20))
	f.add("sun.gc.generation.1.space.0.maxCapacity", 'J', UnitsBytes, Constant, int64(100<<20))
	f.add("sun.rt.jvmCapabilities", 'B', UnitsString, Constant, "0100000000")
	return f.bytes()
}

func TestParsePerfData(t *testing.T) {
	for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		d, err := ParsePerfData(testPerfFile(order, 50<<20, 100_000_000))
		if err != nil {
			t.Fatalf("%v: %v", order, err)
		}
		if v, ok := d.Int("sun.gc.generation.1.space.0.used"); !ok || v != 50<<20 {
			t.Errorf("%v: used = %d, %v", order, v, ok)
		}
		if s, ok := d.String("sun.gc.policy.name"); !ok || s != "GarbageFirst" {
			t.Errorf("%v: policy = %q, %v", order, s, ok)
		}
		c := d.Counters["sun.os.hrt.ticks"]
		if c.Units != UnitsTicks || c.Variability != Monotonic || c.Type != 'J' {
			t.Errorf("%v: %+v", order, c)
		}
		if len(d.Names()) != 12 {
			t.Errorf("%v: %d names", order, len(d.Names()))
		}
	}
	good := testPerfFile(binary.LittleEndian, 1, 1)
	for name, b := range map[string][]byte{
		"short":         good[:10],
		"bad magic":     append([]byte{0, 0, 0, 0}, good[4:]...),
		"inaccessible":  func() []byte { b := bytes.Clone(good); b[7] = 0; return b }(),
		"cut entries":   func() []byte { b := bytes.Clone(good); binary.LittleEndian.PutUint32(b[28:], 1000); return b }(),
		"bad entry len": func() []byte { b := bytes.Clone(good); binary.LittleEndian.PutUint32(b[prologueLen:], 3); return b }(),
	} {
		if _, err := ParsePerfData(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestEvaluatePressure(t *testing.T) {
	for _, tc := range []struct {
		name    string
		oldUsed int64
		gcTicks int64
		th      Thresholds
		under   bool
		reason  string
	}{
		{"calm", 20 << 20, 1_000_000_000, DefaultThresholds(), false,
			"old generation 20% full (20.0 MiB of 100.0 MiB) < 80%; GC 1.0% of 1m40s uptime (12 collections) < 10%"},
		{"old gen", 85 << 20, 1_000_000_000, DefaultThresholds(), true,
			"old generation 85% full (85.0 MiB of 100.0 MiB) >= 80%; GC 1.0% of 1m40s uptime (12 collections) < 10%"},
		{"gc time", 20 << 20, 20_000_000_000, DefaultThresholds(), true,
			"old generation 20% full (20.0 MiB of 100.0 MiB) < 80%; GC 20.0% of 1m40s uptime (12 collections) >= 10%"},
		{"gc time of a young JVM", 20 << 20, 20_000_000_000, Thresholds{OldGenOccupancy: 0.8, GCTimeShare: 0.1, MinUptime: 5 * time.Minute}, false,
			"old generation 20% full (20.0 MiB of 100.0 MiB) < 80%; GC 20.0% of 1m40s uptime (12 collections) not judged: younger than 5m0s"},
		{"only gc time", 99 << 20, 0, Thresholds{GCTimeShare: 0.5}, false,
			"GC 0.0% of 1m40s uptime (12 collections) < 50%"},
		{"none", 99 << 20, 0, Thresholds{}, false, "no threshold set"},
	} {
		d, err := ParsePerfData(testPerfFile(binary.LittleEndian, tc.oldUsed, tc.gcTicks))
		if err != nil {
			t.Fatal(err)
		}
		r, err := EvaluatePressure(d, tc.th)
		if err != nil {
			t.Fatal(err)
		}
		if r.Under != tc.under || r.Reason != tc.reason {
			t.Errorf("%s: Under %v, %q; want %v, %q", tc.name, r.Under, r.Reason, tc.under, tc.reason)
		}
		if r.Collector != "GarbageFirst" || r.LastCause != "G1 Evacuation Pause" || r.Uptime != 100*time.Second || r.GCCount != 12 {
			t.Errorf("%s: %+v", tc.name, r)
		}
	}
	if _, err := EvaluatePressure(&PerfData{Counters: map[string]Counter{}}, DefaultThresholds()); err == nil {
		t.Error("no counters: no error")
	}
}

// TestCredentialsPerThread checks that the switch to another uid affects
// only the thread running the function, and ends with it.
func TestCredentialsPerThread(t *testing.T) {
	needRoot(t)
	id := identity{uid: testUID, gid: testGID, switching: true}
	var inside, leader string
	err := id.run(func() error {
		b, err := os.ReadFile("/proc/thread-self/status")
		if err != nil {
			return err
		}
		inside = statusLine(string(b), "Uid") + " / " + statusLine(string(b), "Gid")
		b, err = os.ReadFile("/proc/self/task/" + strconv.Itoa(os.Getpid()) + "/status")
		leader = statusLine(string(b), "Uid")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside != "0\t1000\t0\t1000 / 0\t1000\t0\t1000" {
		t.Errorf("inside: Uid/Gid %q, want effective and fs ids 1000", inside)
	}
	if leader != "0\t0\t0\t0" && leader != "0\t1000\t0\t1000" {
		t.Errorf("the main thread has Uid %q", leader)
	}
	// Afterwards no thread has the switched ids.
	tasks, _ := filepath.Glob("/proc/self/task/*/status")
	for _, task := range tasks {
		if b, err := os.ReadFile(task); err == nil && statusLine(string(b), "Uid") != "0\t0\t0\t0" {
			t.Errorf("%s: Uid %q after run", task, statusLine(string(b), "Uid"))
		}
	}
	if os.Geteuid() != 0 || os.Getegid() != 0 {
		t.Errorf("after run: euid %d egid %d", os.Geteuid(), os.Getegid())
	}
	// Plain functions run as they are.
	if err := (identity{}).run(func() error { return errors.New("x") }); err == nil || err.Error() != "x" {
		t.Errorf("run without switching: %v", err)
	}
}

func statusLine(status, key string) string {
	for _, l := range strings.Split(status, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestPermissionError(t *testing.T) {
	p := Process{PID: 7, UID: 1000, GID: 1000}
	err := checkIdentity(p, identity{uid: 1001, gid: 1001})
	var pe *PermissionError
	if !errors.Is(err, ErrPermission) || !errors.As(err, &pe) || pe.UID != 1001 || pe.JVMUID != 1000 {
		t.Fatalf("checkIdentity: %v", err)
	}
	if !strings.Contains(err.Error(), "pid 7 (uid 1000, gid 1000) as uid 1001, gid 1001") {
		t.Errorf("message: %v", err)
	}
	for _, id := range []identity{{uid: 0}, {uid: 1000, gid: 1000}, {uid: 1000, gid: 1000, switching: true}} {
		if err := checkIdentity(p, id); err != nil {
			t.Errorf("checkIdentity(%+v): %v", id, err)
		}
	}
}

func TestHeapDumpArguments(t *testing.T) {
	ctx := context.Background()
	p := Process{PID: 1 << 30, NSPID: 1}
	for _, tc := range []struct{ dir, name string }{
		{"relative", "x.hprof"}, {"/d", ""}, {"/d", ".hidden"}, {"/d", "a/b"}, {"/d", ".."},
	} {
		if _, err := HeapDump(ctx, p, tc.dir, tc.name, true); err == nil {
			t.Errorf("HeapDump(%q, %q): no error", tc.dir, tc.name)
		}
	}
	if _, err := HeapDumpWith(ctx, p, "/d", "x", DumpOptions{GzipLevel: 10}); err == nil {
		t.Error("gzip level 10: no error")
	}
}
