// pause is the sandbox process of the e2e rig's pods (the pause image): it
// holds the pod's namespaces, reaps the zombies of a shared PID namespace
// and exits on SIGTERM or SIGINT. The upstream pause image is C; pulling it
// is what the rig avoids.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
