package jvm

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// identity is the effective uid and gid the steps touching a JVM run as.
type identity struct {
	// uid and gid are the ids to switch to when switching.
	uid, gid int
	// switching says that this process is root and the JVM is not: the
	// steps run on a thread whose effective ids are the JVM's.
	switching bool
}

// identityFor decides how to act on p: as ourselves, or, when we are root and
// the JVM is not, as the JVM's effective uid and gid.
func identityFor(p Process) identity {
	if os.Geteuid() == 0 && (p.UID != 0 || p.GID != 0) {
		return identity{uid: p.UID, gid: p.GID, switching: true}
	}
	return identity{uid: os.Geteuid(), gid: os.Getegid()}
}

// run calls fn with the identity's credentials. Without switching it calls fn
// on the calling goroutine. With switching it runs fn on a new goroutine
// locked to its OS thread, whose effective gid and uid are set with raw
// setresgid/setresuid system calls, which change only the calling thread (the
// wrappers in syscall and x/sys/unix change all threads). Afterwards the ids
// are set back and checked with getresuid/getresgid; only when all six match
// the ids from before is the thread unlocked and returned to the runtime.
// Otherwise the goroutine ends still locked and the runtime destroys the
// thread (or, for the main thread, parks it for good), so the switched ids can
// never reach other goroutines. Threads the runtime starts while fn runs are
// cloned from its template thread, not from this one. When the kernel refuses
// the switch (root without CAP_SETUID/CAP_SETGID), fn runs as root.
func (id identity) run(fn func() error) error {
	if !id.switching {
		return fn()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		before, err := threadIDs()
		if err != nil {
			done <- err
			return
		}
		if err := setThreadIDs(id.uid, id.gid); err != nil {
			if !restoreThreadIDs(before) {
				done <- err // the ids are unknown: stay locked, the thread dies
				return
			}
			// Not permitted: go on as root (JDK 11+ accept root).
		}
		err = fn()
		if restoreThreadIDs(before) {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// ids are a thread's real, effective and saved uids and gids.
type ids struct{ ruid, euid, suid, rgid, egid, sgid uintptr }

// threadIDs returns the calling thread's ids.
func threadIDs() (ids, error) {
	var r, e, s uint32
	var v ids
	if _, _, errno := unix.RawSyscall(sysGetresuid, uintptr(unsafe.Pointer(&r)), uintptr(unsafe.Pointer(&e)), uintptr(unsafe.Pointer(&s))); errno != 0 {
		return v, fmt.Errorf("getresuid: %v", errno)
	}
	v.ruid, v.euid, v.suid = uintptr(r), uintptr(e), uintptr(s)
	if _, _, errno := unix.RawSyscall(sysGetresgid, uintptr(unsafe.Pointer(&r)), uintptr(unsafe.Pointer(&e)), uintptr(unsafe.Pointer(&s))); errno != 0 {
		return v, fmt.Errorf("getresgid: %v", errno)
	}
	v.rgid, v.egid, v.sgid = uintptr(r), uintptr(e), uintptr(s)
	return v, nil
}

// restoreThreadIDs sets the calling thread's ids back (uid first, which gives
// root back its capabilities, then gid) and reports whether all of them are
// as before.
func restoreThreadIDs(before ids) bool {
	unix.RawSyscall(sysSetresuid, before.ruid, before.euid, before.suid)
	unix.RawSyscall(sysSetresgid, before.rgid, before.egid, before.sgid)
	after, err := threadIDs()
	return err == nil && after == before
}

// setThreadIDs sets the effective gid, then the effective uid, of the calling
// thread only; the real and saved ids stay as they are (0).
func setThreadIDs(uid, gid int) error {
	if _, _, e := unix.RawSyscall(sysSetresgid, ^uintptr(0), uintptr(gid), ^uintptr(0)); e != 0 {
		return fmt.Errorf("setresgid(-1, %d, -1): %w", gid, e)
	}
	if _, _, e := unix.RawSyscall(sysSetresuid, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
		return fmt.Errorf("setresuid(-1, %d, -1): %w", uid, e)
	}
	return nil
}
