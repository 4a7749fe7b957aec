//go:build linux && (386 || arm)

package jvm

import "golang.org/x/sys/unix"

// On 386 and arm, SYS_SETRESUID and friends take 16-bit ids; the 32 variants
// take full ids.
const (
	sysSetresuid = unix.SYS_SETRESUID32
	sysSetresgid = unix.SYS_SETRESGID32
	sysGetresuid = unix.SYS_GETRESUID32
	sysGetresgid = unix.SYS_GETRESGID32
)
