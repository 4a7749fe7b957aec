package jvm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultProcRoot is where procfs is mounted.
const DefaultProcRoot = "/proc"

// Process is a JVM process seen through procfs.
type Process struct {
	// PID is the process id in the pid namespace of procRoot (the name of
	// its /proc entry): the one to signal.
	PID int
	// NSPID is the process id inside its own pid namespace (the last field
	// of NSpid in /proc/<pid>/status): the JVM names its attach socket and
	// hsperfdata file after it. Equal to PID when both share a namespace.
	NSPID int
	// PPID is the parent's pid (0 when the parent is outside the namespace).
	PPID int
	// UID and GID are the effective uid and gid of the process.
	UID, GID int
	// Cmdline is the command line (argv).
	Cmdline []string
	// ProcRoot is the procfs the process was found in ("/proc").
	ProcRoot string
}

func (p Process) String() string {
	name := ""
	if len(p.Cmdline) > 0 {
		name = " " + filepath.Base(p.Cmdline[0])
	}
	return fmt.Sprintf("pid %d%s (uid %d, gid %d)", p.PID, name, p.UID, p.GID)
}

// proc returns the path of a file under the process's procfs entry.
func (p Process) proc(elem ...string) string {
	root := p.ProcRoot
	if root == "" {
		root = DefaultProcRoot
	}
	return filepath.Join(append([]string{root, strconv.Itoa(p.PID)}, elem...)...)
}

// ErrProcessGone is returned when the process exited (or its pid is not in
// procfs at all).
var ErrProcessGone = errors.New("the process is gone")

// FindJVMs lists the HotSpot JVM processes of the calling process's
// container (InContainer) in procRoot ("" means /proc), sorted by pid,
// except the calling process. A process is a JVM when the base name of its
// executable or of argv[0] is "java", or when libjvm.so is mapped into it
// (launchers that embed the JVM). Zombies and kernel threads are skipped, and
// so are processes that exit while being looked at.
//
// Inside a container (its own pid namespace) this finds the JVM whether it is
// PID 1 or the child of a shell or launcher script. With a pid namespace
// shared with other containers (shareProcessNamespace) or with the node
// (hostPID), their processes are in procRoot too: they are not listed. The
// executable and the memory maps of a process of another uid are readable
// only with CAP_SYS_PTRACE; argv[0] is readable by anyone and is what finds
// the usual "java ..." process.
func FindJVMs(procRoot string) ([]Process, error) {
	if procRoot == "" {
		procRoot = DefaultProcRoot
	}
	ours, err := ownMountNS()
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	var jvms []Process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 || pid == self {
			continue
		}
		p, err := Lookup(procRoot, pid)
		if err != nil {
			continue // gone, a zombie or kernel thread, or unreadable
		}
		if isJVM(p) && inMountNS(p, ours) {
			jvms = append(jvms, p)
		}
	}
	sort.Slice(jvms, func(i, j int) bool { return jvms[i].PID < jvms[j].PID })
	return jvms, nil
}

// nsID identifies a namespace: the device and inode of its nsfs file, which
// is how namespaces(7) says to compare them (the inode alone may repeat
// across nsfs instances).
type nsID struct{ dev, ino uint64 }

// selfMountNS is this process's mount namespace file. The procfs mounted at
// /proc is the one that shows this process as "self", whatever procRoot a
// caller lists: namespace identities are the same in every procfs.
const selfMountNS = "/proc/self/ns/mnt"

func ownMountNS() (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(selfMountNS, &st); err != nil {
		return nsID{}, fmt.Errorf("cannot tell this process's container from others: stat %s: %w", selfMountNS, err)
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

// InContainer reports whether p runs in the calling process's container:
// whether it is in the same mount namespace.
//
// Why the mount namespace: every container of a pod has a mount namespace
// of its own (its own root file system), and what runs in a container (its
// processes, and a preStop hook or a kubectl exec, which the runtime starts
// inside it with setns) shares it. The pid namespace tells nothing once it
// is shared (shareProcessNamespace, hostPID), and neither does the uid. A
// process cannot join another mount namespace without CAP_SYS_ADMIN, so a
// process of another container cannot pass for one of ours. Cgroups are a
// weaker criterion: their paths depend on the runtime and its cgroup driver,
// a cgroup namespace shows "/" to every container, and a process that may
// write to the cgroup file system can move itself. (A process of ours that
// made a mount namespace of its own, unshare -m, is left out: JVMs do not.)
//
// /proc/<pid>/ns/mnt is readable only with the process's uid or
// CAP_SYS_PTRACE: when this process is root, the JVM's uid is tried too (see
// the package documentation). A namespace that cannot be read counts as
// another one: a process that cannot be told apart is not ours to signal.
func InContainer(p Process) bool {
	ours, err := ownMountNS()
	return err == nil && inMountNS(p, ours)
}

func inMountNS(p Process, ours nsID) bool {
	stat := func() (nsID, error) {
		var st unix.Stat_t
		err := unix.Stat(p.proc("ns", "mnt"), &st)
		return nsID{uint64(st.Dev), st.Ino}, err
	}
	theirs, err := stat()
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		if id := identityFor(p); id.switching {
			_ = id.run(func() error {
				theirs, err = stat()
				return nil
			})
		}
	}
	return err == nil && theirs == ours
}

// Lookup reads the process pid from procRoot ("" means /proc) without
// checking that it is a JVM. It returns an error wrapping ErrProcessGone for
// a pid that does not exist or is a zombie, and an error for a kernel thread.
func Lookup(procRoot string, pid int) (Process, error) {
	if procRoot == "" {
		procRoot = DefaultProcRoot
	}
	p := Process{PID: pid, NSPID: pid, ProcRoot: procRoot}
	st, err := readStatus(p)
	if err != nil {
		return p, err
	}
	if strings.HasPrefix(st["State"], "Z") || strings.HasPrefix(st["State"], "X") {
		return p, fmt.Errorf("pid %d is a zombie: %w", pid, ErrProcessGone)
	}
	if p.UID, err = field(st, "Uid", 1); err != nil {
		return p, fmt.Errorf("pid %d: %w", pid, err)
	}
	if p.GID, err = field(st, "Gid", 1); err != nil {
		return p, fmt.Errorf("pid %d: %w", pid, err)
	}
	p.PPID, _ = field(st, "PPid", 0)
	if ns := strings.Fields(st["NSpid"]); len(ns) > 0 {
		if n, err := strconv.Atoi(ns[len(ns)-1]); err == nil {
			p.NSPID = n
		}
	}
	raw, err := readAppPrefix(p.proc("cmdline"), maxArgsSize)
	if err != nil {
		return p, gone(pid, err)
	}
	if len(raw) == 0 {
		return p, fmt.Errorf("pid %d has no command line (a kernel thread or exiting)", pid)
	}
	p.Cmdline = splitNUL(raw)
	return p, nil
}

// isJVM applies the argv[0], executable and libjvm.so tests.
func isJVM(p Process) bool {
	if len(p.Cmdline) > 0 && filepath.Base(p.Cmdline[0]) == "java" {
		return true
	}
	if exe, err := os.Readlink(p.proc("exe")); err == nil {
		if filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == "java" {
			return true
		}
	}
	return mapsLibJVM(p)
}

// mapsLibJVM scans /proc/<pid>/maps (up to maxMapsSize) for libjvm.so.
func mapsLibJVM(p Process) bool {
	f, _, err := openRegularAt(unix.AT_FDCWD, p.proc("maps"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, maxMapsSize))
	sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
	for sc.Scan() {
		if bytes.Contains(sc.Bytes(), []byte("/libjvm.so")) {
			return true
		}
	}
	return false
}

// readStatus parses /proc/<pid>/status into key -> value.
func readStatus(p Process) (map[string]string, error) {
	raw, err := readAppFile(p.proc("status"), maxStatusSize)
	if err != nil {
		return nil, gone(p.PID, err)
	}
	st := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	return st, nil
}

// field returns the i-th whitespace-separated number of a status line.
func field(st map[string]string, key string, i int) (int, error) {
	f := strings.Fields(st[key])
	if len(f) <= i {
		return 0, fmt.Errorf("no %s in /proc status", key)
	}
	return strconv.Atoi(f[i])
}

func gone(pid int, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("pid %d: %w", pid, ErrProcessGone)
	}
	return err
}

func splitNUL(raw []byte) []string {
	raw = bytes.TrimRight(raw, "\x00")
	if len(raw) == 0 {
		return nil
	}
	parts := bytes.Split(raw, []byte{0})
	out := make([]string, len(parts))
	for i, b := range parts {
		out[i] = string(b)
	}
	return out
}

// alive reports whether the process still exists and is not a zombie.
func alive(p Process) bool {
	st, err := readStatus(p)
	return err == nil && !strings.HasPrefix(st["State"], "Z") && !strings.HasPrefix(st["State"], "X")
}

// state returns the State line of /proc/<pid>/status, e.g. "T (stopped)".
func state(p Process) string {
	st, err := readStatus(p)
	if err != nil {
		return "gone"
	}
	return st["State"]
}

// catchesSIGQUIT reports whether the process has a handler for SIGQUIT
// (SigCgt in /proc/<pid>/status). A JVM started with -Xrs, or one that has
// not installed its handlers yet, would be killed by SIGQUIT.
func catchesSIGQUIT(p Process) (bool, error) {
	st, err := readStatus(p)
	if err != nil {
		return false, err
	}
	mask, err := strconv.ParseUint(st["SigCgt"], 16, 64)
	if err != nil {
		return false, fmt.Errorf("pid %d: SigCgt %q: %w", p.PID, st["SigCgt"], err)
	}
	const sigquit = 3
	return mask&(1<<(sigquit-1)) != 0, nil
}

// environ reads the process environment (readable only with the process's
// uid or CAP_SYS_PTRACE).
func environ(p Process) (map[string]string, error) {
	raw, err := readAppPrefix(p.proc("environ"), maxArgsSize)
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for _, kv := range splitNUL(raw) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env, nil
}

// sameMountNS reports whether the process shares this process's mount
// namespace; when that cannot be told it assumes it does.
func sameMountNS(p Process) bool {
	root := p.ProcRoot
	if root == "" {
		root = DefaultProcRoot
	}
	ours, err1 := os.Readlink(filepath.Join(root, "self", "ns", "mnt"))
	theirs, err2 := os.Readlink(p.proc("ns", "mnt"))
	return err1 != nil || err2 != nil || ours == theirs
}

// localPath turns a path as the JVM sees it into one this process can open:
// the same path in a shared mount namespace, else through /proc/<pid>/root.
func localPath(p Process, path string) string {
	if sameMountNS(p) {
		return path
	}
	return p.proc("root") + path
}
