package jvm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Errors of Attach and Execute. The returned errors wrap them and add what
// was found (the pid, the uids, the flag and where it was set, the process
// state, how long we waited).
var (
	// ErrAttachDisabled says that the JVM runs with
	// -XX:+DisableAttachMechanism: it never opens the attach socket.
	ErrAttachDisabled = errors.New("the JVM's attach mechanism is disabled")
	// ErrNotResponding says that the JVM did not open its attach socket, or
	// did not answer a command, before the deadline: a JVM that is stopped,
	// stuck before a safepoint, or swapping (or one that disabled attach in
	// an options file this package does not read, with -XX:-UsePerfData).
	ErrNotResponding = errors.New("the JVM did not respond")
	// ErrPermission says that this process may not attach to the JVM; the
	// *PermissionError that wraps it names the uids involved.
	ErrPermission = errors.New("not permitted to attach")
	// ErrNoSignalHandler says that the JVM does not handle SIGQUIT (-Xrs or
	// -XX:+ReduceSignalUsage, or not a HotSpot JVM): sending it would kill
	// the process, so it is not sent and the attach listener cannot be
	// started.
	ErrNoSignalHandler = errors.New("the JVM does not handle SIGQUIT; not sending it")
)

// PermissionError explains why this process may not attach to a JVM.
type PermissionError struct {
	// PID is the JVM's pid.
	PID int
	// JVMUID and JVMGID are the JVM's effective ids.
	JVMUID, JVMGID int
	// UID and GID are the effective ids this process acted with.
	UID, GID int
	// Op says what was refused.
	Op string
	// Err is the underlying error, if any.
	Err error
}

func (e *PermissionError) Error() string {
	s := fmt.Sprintf("attach to pid %d (uid %d, gid %d) as uid %d, gid %d: %s", e.PID, e.JVMUID, e.JVMGID, e.UID, e.GID, e.Op)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns ErrPermission and the underlying error.
func (e *PermissionError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrPermission, e.Err}
	}
	return []error{ErrPermission}
}

// DefaultAttachTimeout bounds the wait for the attach socket when the
// context of Attach has no deadline (the JDK waits as long by default).
const DefaultAttachTimeout = 10 * time.Second

// Limits of attach protocol version 1 (HotSpot's AttachOperation).
const (
	maxArgs      = 3
	maxArgLen    = 1024
	maxOutputLen = 64 << 20
)

// Conn is an attach connection to a JVM whose attach listener runs. HotSpot
// answers one command per connection, so a Conn holds no open socket: each
// Execute connects anew, and a Conn needs no closing.
type Conn struct {
	p      Process
	id     identity
	socket string
}

// Process returns the JVM the connection is to.
func (c *Conn) Process() Process { return c.p }

// Socket returns the path of the attach socket as this process reaches it.
func (c *Conn) Socket() string { return c.socket }

// Attach makes sure the JVM's attach listener runs and returns a Conn to it.
//
// When the socket /tmp/.java_pid<nspid> of the JVM is not there, Attach
// checks that the JVM did not disable attach (ErrAttachDisabled, at once) and
// that it handles SIGQUIT (ErrNoSignalHandler), creates the trigger file
// .attach_pid<nspid> in the JVM's working directory (else in its /tmp), sends
// SIGQUIT and waits for the socket until ctx is done (DefaultAttachTimeout
// when ctx has no deadline; then ErrNotResponding), and removes the trigger
// file. The socket must belong to the JVM's uid and be private to it, as the
// JDK checks. Errors wrap ErrProcessGone when the JVM exits meanwhile and
// ErrPermission (a *PermissionError) when this process lacks the right uid.
func Attach(ctx context.Context, p Process) (*Conn, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultAttachTimeout)
		defer cancel()
	}
	id := identityFor(p)
	if err := checkIdentity(p, id); err != nil {
		return nil, err
	}
	var c *Conn
	err := id.run(func() error {
		var err error
		c, err = attach(ctx, p, id)
		return err
	})
	return c, err
}

// checkIdentity refuses early when neither we nor our switched thread can
// match what the JVM accepts: its own effective uid and gid, or root.
func checkIdentity(p Process, id identity) error {
	if id.switching || id.uid == 0 || (id.uid == p.UID && id.gid == p.GID) {
		return nil
	}
	return &PermissionError{PID: p.PID, JVMUID: p.UID, JVMGID: p.GID, UID: id.uid, GID: id.gid,
		Op: "the JVM accepts only its own effective uid and gid, or root; run dumpcatcher with the JVM's uid and gid"}
}

func attach(ctx context.Context, p Process, id identity) (*Conn, error) {
	start := time.Now()
	tmp := jvmTmp(p)
	socket := filepath.Join(tmp, ".java_pid"+strconv.Itoa(p.NSPID))
	c := &Conn{p: p, id: id, socket: socket}
	if ok, err := socketReady(p, id, socket); err != nil || ok {
		return c.orNil(err)
	}
	if !alive(p) {
		return nil, fmt.Errorf("attach to %v: %w", p, ErrProcessGone)
	}
	if off, where := attachDisabled(p); off {
		return nil, fmt.Errorf("attach to %v: %w (%s)", p, ErrAttachDisabled, where)
	}
	if err := waitSignalHandler(ctx, p); err != nil {
		return nil, err
	}
	trigger, err := createTrigger(p, id, tmp)
	if err != nil {
		return nil, err
	}
	if trigger != "" {
		defer os.Remove(trigger)
	}
	if err := unix.Kill(p.PID, unix.SIGQUIT); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("attach to %v: %w", p, ErrProcessGone)
		}
		return nil, &PermissionError{PID: p.PID, JVMUID: p.UID, JVMGID: p.GID, UID: id.uid, GID: id.gid, Op: "send SIGQUIT", Err: err}
	}
	delay := 5 * time.Millisecond
	for {
		if ok, err := socketReady(p, id, socket); err != nil || ok {
			return c.orNil(err)
		}
		if !alive(p) {
			return nil, fmt.Errorf("attach to %v: %w", p, ErrProcessGone)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("attach to %v: %w: no attach socket %s %v after SIGQUIT (process state: %s): %w",
				p, ErrNotResponding, socket, time.Since(start).Round(time.Millisecond), state(p), context.Cause(ctx))
		case <-t.C:
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// orNil returns c without an error, else the error alone.
func (c *Conn) orNil(err error) (*Conn, error) {
	if err != nil {
		return nil, err
	}
	return c, nil
}

// jvmTmp returns the JVM's /tmp as this process reaches it: through
// /proc/<pid>/root when that is allowed, else our own /tmp (the same mount
// namespace, as when dumpcatcher runs inside the JVM's container).
func jvmTmp(p Process) string {
	tmp := p.proc("root", "tmp")
	if _, err := os.Stat(tmp); err == nil {
		return tmp
	}
	return "/tmp"
}

// socketReady reports whether the attach socket exists, and checks that it is
// a socket owned by the JVM's uid that nobody else may use, as the JDK does.
// A symbolic link there is refused, not followed: the JVM creates the socket
// itself.
func socketReady(p Process, id identity, socket string) (bool, error) {
	var st unix.Stat_t
	err := unix.Lstat(socket, &st)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, &PermissionError{PID: p.PID, JVMUID: p.UID, JVMGID: p.GID, UID: id.uid, GID: id.gid, Op: "look for the attach socket",
			Err: &fs.PathError{Op: "lstat", Path: socket, Err: err}}
	}
	return true, checkSocket(p, socket, st)
}

// checkSocket checks what the JDK checks of an attach socket: a socket of
// the JVM's uid that nobody else may use.
func checkSocket(p Process, socket string, st unix.Stat_t) error {
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFSOCK:
		return fmt.Errorf("attach to %v: %s is not a socket (mode %#o); not using it", p, socket, st.Mode)
	case int(st.Uid) != p.UID:
		return fmt.Errorf("attach to %v: the attach socket %s is owned by uid %d, not by the JVM's uid %d; not using it", p, socket, st.Uid, p.UID)
	case st.Mode&0o066 != 0:
		return fmt.Errorf("attach to %v: the attach socket %s is accessible to others (mode %#o); not using it", p, socket, st.Mode&0o777)
	}
	return nil
}

// createTrigger creates .attach_pid<nspid> in the JVM's working directory,
// else in its /tmp, and returns its path ("" when one was there already: it
// is then left alone).
func createTrigger(p Process, id identity, tmp string) (string, error) {
	name := ".attach_pid" + strconv.Itoa(p.NSPID)
	var errs []error
	for _, dir := range []string{p.proc("cwd"), tmp} {
		path := filepath.Join(dir, name)
		// O_EXCL never follows a link; O_NONBLOCK is for good measure.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0o600)
		if err == nil {
			f.Close()
			return path, nil
		}
		if errors.Is(err, fs.ErrExist) {
			return "", nil
		}
		errs = append(errs, err)
	}
	return "", &PermissionError{PID: p.PID, JVMUID: p.UID, JVMGID: p.GID, UID: id.uid, GID: id.gid,
		Op: "create the trigger file " + name + " in the JVM's working directory or /tmp", Err: errors.Join(errs...)}
}

// waitSignalHandler waits until the JVM handles SIGQUIT (a JVM still starting
// has not installed its handler yet, and SIGQUIT would kill it). A JVM run
// with -Xrs never does: that is reported at once.
func waitSignalHandler(ctx context.Context, p Process) error {
	for {
		ok, err := catchesSIGQUIT(p)
		if err != nil {
			return fmt.Errorf("attach to %v: %w", p, err)
		}
		if ok {
			return nil
		}
		if where := reducedSignals(p); where != "" {
			return fmt.Errorf("attach to %v: %w (%s)", p, ErrNoSignalHandler, where)
		}
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("attach to %v: %w: it still has no SIGQUIT handler (not a HotSpot JVM, or one still starting): %w",
				p, ErrNoSignalHandler, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// attachDisabled tells whether the JVM disabled its attach mechanism and how
// that was found. The JVM's own word comes first: the first character of the
// hsperfdata string sun.rt.jvmCapabilities is '1' when attach is supported
// (what jps and jcmd check). Without hsperfdata the options are read from
// JAVA_TOOL_OPTIONS, JDK_JAVA_OPTIONS, the command line and _JAVA_OPTIONS,
// in the order the JVM applies them (the last one wins); options files
// (@argfiles, -XX:VMOptionsFile, -XX:Flags) are not followed.
func attachDisabled(p Process) (bool, string) {
	if pd, err := readPerfData(p); err == nil {
		if c, ok := pd.String("sun.rt.jvmCapabilities"); ok && c != "" {
			return c[0] == '0', "-XX:+DisableAttachMechanism, as its hsperfdata sun.rt.jvmCapabilities says"
		}
	}
	v, where := lastFlag(p, func(o string) (bool, bool) {
		switch o {
		case "-XX:+DisableAttachMechanism":
			return true, true
		case "-XX:-DisableAttachMechanism":
			return false, true
		}
		return false, false
	})
	if v {
		return true, "-XX:+DisableAttachMechanism in " + where
	}
	return false, ""
}

// reducedSignals returns where -Xrs or -XX:+ReduceSignalUsage is set, or "".
func reducedSignals(p Process) string {
	v, where := lastFlag(p, func(o string) (bool, bool) {
		switch o {
		case "-Xrs", "-XX:+ReduceSignalUsage":
			return true, true
		case "-XX:-ReduceSignalUsage":
			return false, true
		}
		return false, false
	})
	if v {
		return "-Xrs or -XX:+ReduceSignalUsage in " + where
	}
	return ""
}

// lastFlag returns the value of the last JVM option match recognizes and the
// source it came from.
func lastFlag(p Process, match func(string) (value, ok bool)) (bool, string) {
	env, _ := environ(p) // unreadable: the command line still counts
	sources := []struct {
		name string
		opts []string
	}{
		{"JAVA_TOOL_OPTIONS", strings.Fields(env["JAVA_TOOL_OPTIONS"])},
		{"JDK_JAVA_OPTIONS", strings.Fields(env["JDK_JAVA_OPTIONS"])},
		{"the command line", jvmOptions(p.Cmdline)},
		{"_JAVA_OPTIONS", strings.Fields(env["_JAVA_OPTIONS"])},
	}
	value, where := false, ""
	for _, s := range sources {
		for _, o := range s.opts {
			if v, ok := match(o); ok {
				value, where = v, s.name
			}
		}
	}
	return value, where
}

// jvmOptions returns the options of a java command line: the arguments
// before the main class, -jar file or module.
func jvmOptions(argv []string) []string {
	if len(argv) < 2 {
		return nil
	}
	var opts []string
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		switch a {
		case "-cp", "-classpath", "--class-path", "-p", "--module-path", "--upgrade-module-path",
			"--add-modules", "--limit-modules", "--add-exports", "--add-opens", "--add-reads",
			"--patch-module", "--enable-native-access", "--source":
			i++
			continue
		case "-jar", "-m", "--module":
			return opts
		}
		if !strings.HasPrefix(a, "-") || strings.HasPrefix(a, "--module=") {
			return opts
		}
		opts = append(opts, a)
	}
	return opts
}

// Execute sends one command with up to three arguments and returns the
// JVM's status (0 is success) and output. Commands include "properties",
// "agentProperties", "threaddump", "dumpheap" (path, -live|-all, gzip level),
// "inspectheap", "setflag", "printflag", and "jcmd" whose argument is a whole
// jcmd command line ("VM.version", "GC.heap_info", ...). ctx bounds the whole
// exchange; when it ends first the error wraps ErrNotResponding and the
// context's error. A non-zero status is not an error: the output says why.
func (c *Conn) Execute(ctx context.Context, cmd string, args ...string) (int, string, error) {
	req, err := request(cmd, args)
	if err != nil {
		return 0, "", err
	}
	var conn net.Conn
	err = c.id.run(func() error {
		var err error
		conn, err = dialAttach(c.p, c.socket)
		return err
	})
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ECONNREFUSED) {
			if !alive(c.p) {
				return 0, "", fmt.Errorf("%s to %v: %w", cmd, c.p, ErrProcessGone)
			}
			return 0, "", fmt.Errorf("%s to %v: the attach listener is gone (%w); attach again", cmd, c.p, err)
		}
		if errors.Is(err, unix.EAGAIN) {
			return 0, "", fmt.Errorf("%s to %v: %w: its attach socket accepts no more connections (%s)", cmd, c.p, ErrNotResponding, state(c.p))
		}
		return 0, "", fmt.Errorf("%s to %v: connect: %w", cmd, c.p, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	start := time.Now()
	timedOut := func(err error) error {
		var ne net.Error
		if ctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()) {
			return fmt.Errorf("%s to %v: %w: no answer after %v (process state: %s): %w",
				cmd, c.p, ErrNotResponding, time.Since(start).Round(time.Millisecond), state(c.p), context.Cause(ctx))
		}
		return nil
	}
	if _, err := conn.Write(req); err != nil {
		if te := timedOut(err); te != nil {
			return 0, "", te
		}
		return 0, "", fmt.Errorf("%s to %v: send: %w", cmd, c.p, err)
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil {
		if te := timedOut(err); te != nil {
			return 0, "", te
		}
		if !alive(c.p) {
			return 0, "", fmt.Errorf("%s to %v: %w", cmd, c.p, ErrProcessGone)
		}
		if line == "" && errors.Is(err, io.EOF) {
			return 0, "", &PermissionError{PID: c.p.PID, JVMUID: c.p.UID, JVMGID: c.p.GID, UID: c.id.uid, GID: c.id.gid,
				Op: "the JVM closed the connection without answering (it drops clients whose effective uid and gid are not its own or root)"}
		}
		return 0, "", fmt.Errorf("%s to %v: read the status: %w", cmd, c.p, err)
	}
	status, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return 0, "", fmt.Errorf("%s to %v: not a HotSpot attach answer: status line %q", cmd, c.p, line)
	}
	out, err := io.ReadAll(io.LimitReader(br, maxOutputLen))
	if err != nil {
		if te := timedOut(err); te != nil {
			return status, string(out), te
		}
		return status, string(out), fmt.Errorf("%s to %v: read the output: %w", cmd, c.p, err)
	}
	return status, string(out), nil
}

// request encodes a protocol version 1 request.
func request(cmd string, args []string) ([]byte, error) {
	if cmd == "" || strings.IndexByte(cmd, 0) >= 0 {
		return nil, fmt.Errorf("attach: bad command %q", cmd)
	}
	if len(args) > maxArgs {
		return nil, fmt.Errorf("attach: %s: %d arguments, the protocol carries at most %d", cmd, len(args), maxArgs)
	}
	req := []byte("1\x00" + cmd + "\x00")
	for i := range maxArgs {
		a := ""
		if i < len(args) {
			a = args[i]
		}
		if strings.IndexByte(a, 0) >= 0 || len(a) > maxArgLen {
			return nil, fmt.Errorf("attach: %s: argument %d must have no NUL byte and at most %d bytes", cmd, i, maxArgLen)
		}
		req = append(append(req, a...), 0)
	}
	return req, nil
}

// dialAttach connects to the JVM's attach socket: it opens the path
// without following a link (O_PATH), checks the opened file like
// socketReady, and connects to that very file through /proc/self/fd, so
// that it cannot be swapped for another socket in between.
func dialAttach(p Process, socket string) (net.Conn, error) {
	fd, err := unix.Open(socket, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fs.ErrNotExist
		}
		return nil, &fs.PathError{Op: "open", Path: socket, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &fs.PathError{Op: "fstat", Path: socket, Err: err}
	}
	if err := checkSocket(p, socket, st); err != nil {
		return nil, err
	}
	conn, err := dial("/proc/self/fd/" + strconv.Itoa(fd))
	if errors.Is(err, fs.ErrNotExist) {
		// No procfs at /proc (it is how the process was found, though):
		// the path itself.
		return dial(socket)
	}
	return conn, err
}

// dial connects to the Unix socket on the calling thread, so that the
// connection carries this thread's credentials (SO_PEERCRED records them at
// connect time). The socket is non-blocking: a full listen backlog (a JVM
// that stopped accepting) fails with EAGAIN instead of hanging.
func dial(path string) (net.Conn, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.ENOENT) {
			return nil, fs.ErrNotExist
		}
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	return net.FileConn(f)
}
