package miniotest

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel kill minio if the test binary dies without
// running its cleanups.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
