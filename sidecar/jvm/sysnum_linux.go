//go:build linux && !386 && !arm

package jvm

import "golang.org/x/sys/unix"

// The system calls that set and get one thread's ids.
const (
	sysSetresuid = unix.SYS_SETRESUID
	sysSetresgid = unix.SYS_SETRESGID
	sysGetresuid = unix.SYS_GETRESUID
	sysGetresgid = unix.SYS_GETRESGID
)
