package jvm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFindJVMsOwnMountNamespace: with a shared pid namespace
// (shareProcessNamespace, hostPID) the processes of other containers are in
// /proc too. A JVM in another mount namespace (another container's) is not
// listed; the JVMs of our own are, whatever their uid.
func TestFindJVMsOwnMountNamespace(t *testing.T) {
	t.Parallel()
	needRoot(t)
	ours := startJVM(t, jvmSpec{uid: testUID, gid: testGID})
	other := startJVM(t, jvmSpec{uid: testUID, gid: testGID, cloneflags: syscall.CLONE_NEWNS})
	otherRoot := startJVM(t, jvmSpec{cloneflags: syscall.CLONE_NEWNS})
	jvms, err := FindJVMs("")
	if err != nil {
		t.Fatal(err)
	}
	found := map[int]bool{}
	for _, p := range jvms {
		found[p.PID] = true
	}
	if !found[ours.PID] {
		t.Errorf("FindJVMs did not list the JVM %d of our mount namespace: %v", ours.PID, jvms)
	}
	for _, j := range []*testJVM{other, otherRoot} {
		if found[j.PID] {
			t.Errorf("FindJVMs listed the JVM %d (uid %d) of another mount namespace: %v", j.PID, j.UID, jvms)
		}
	}
}

// fifoAsApp creates a FIFO at path with a process of the app's uid, as a
// hostile app would, and removes it when the test ends. The FIFO is opened
// for writing at the end, which frees a reader blocked in open.
// Its directory is made by root for the app's uid (/tmp is not writable by
// every uid on every test machine; in a container the app's /tmp is).
func fifoAsApp(t *testing.T, path string) {
	t.Helper()
	if err := os.Mkdir(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Dir(path), testUID, testGID); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("mkfifo", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: testUID, Gid: testGID}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkfifo %s as uid %d: %v\n%s", path, testUID, err, out)
	}
	t.Cleanup(func() {
		if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
		os.Remove(path)
		os.Remove(filepath.Dir(path))
	})
}

// TestPerfDataFIFO: a FIFO the app put where the JVM's hsperfdata file
// would be neither blocks the reader nor is taken for counters.
func TestPerfDataFIFO(t *testing.T) {
	t.Parallel()
	needRoot(t)
	j := startJVM(t, jvmSpec{uid: testUID, gid: testGID, opts: []string{"-XX:-UsePerfData"}})
	fifoAsApp(t, fmt.Sprintf("/tmp/hsperfdata_dumpcatcher-fifo-%d/%d", j.NSPID, j.NSPID))
	done := make(chan error, 1)
	go func() {
		_, err := ReadPerfData(j.Process)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("ReadPerfData of a FIFO: %v; want an error saying it is not a regular file", err)
		}
		t.Log(err)
	case <-time.After(5 * time.Second):
		t.Fatal("ReadPerfData blocked on a FIFO for 5 s")
	}
	// Attach reads hsperfdata too (is attach disabled?): it must not
	// block either, and the JVM is still dumped.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	attached := make(chan error, 1)
	go func() {
		_, err := Attach(ctx, j.Process)
		attached <- err
	}()
	select {
	case err := <-attached:
		if err != nil {
			t.Fatalf("Attach with a FIFO for hsperfdata: %v", err)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("Attach blocked on a FIFO past its deadline")
	}
}

// TestReadAppFile: the files the app controls are read without following a
// link, without blocking and up to a size.
func TestReadAppFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, size int64) string {
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil { // sparse
			t.Fatal(err)
		}
		f.Close()
		return p
	}
	small := write("small", 100)
	big := write("big", 2<<20)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(small, link); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	for _, tc := range []struct {
		path string
		max  int64
		n    int
		err  string
	}{
		{small, 1 << 20, 100, ""},
		{big, 1 << 20, 0, "larger than"},
		{link, 1 << 20, 0, "not a regular file"},
		{zero, 1 << 20, 0, "not a regular file"},
		{fifo, 1 << 20, 0, "not a regular file"},
		{dir, 1 << 20, 0, "not a regular file"},
		{filepath.Join(dir, "missing"), 1 << 20, 0, "no such file"},
	} {
		type result struct {
			b   []byte
			err error
		}
		done := make(chan result, 1)
		go func() {
			b, err := readAppFile(tc.path, tc.max)
			done <- result{b, err}
		}()
		select {
		case r := <-done:
			if len(r.b) != tc.n || (r.err == nil) != (tc.err == "") || (r.err != nil && !strings.Contains(r.err.Error(), tc.err)) {
				t.Errorf("readAppFile(%s) = %d bytes, %v; want %d bytes, error %q", filepath.Base(tc.path), len(r.b), r.err, tc.n, tc.err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("readAppFile(%s) blocked", filepath.Base(tc.path))
		}
	}
	// A procfs file (size 0) is read up to the limit.
	b, err := readAppFile("/proc/self/status", 1<<20)
	if err != nil || !strings.Contains(string(b), "Pid:") {
		t.Errorf("readAppFile(/proc/self/status) = %.100q, %v", b, err)
	}
	if b, err := readAppFile("/proc/self/status", 10); !errors.Is(err, errTooLarge) || len(b) != 0 {
		t.Errorf("readAppFile(/proc/self/status, 10) = %q, %v; want errTooLarge", b, err)
	}
}
