// Package signals turns the termination signals of a container into a
// context, the same way for both binaries: the first SIGTERM or SIGINT
// cancels the context (the program stops gracefully: the uploader drains,
// the webhook finishes its requests), a second one exits the process at
// once with code 1.
package signals

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/go-logr/logr"
)

// Context returns a child of parent that is cancelled by the first SIGTERM
// or SIGINT. A second signal is logged and exits the process with code 1
// without waiting for anything. stop cancels the context, stops listening
// for the signals and waits for the goroutine that does; call it when done.
func Context(parent context.Context, log logr.Logger) (ctx context.Context, stop func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	ctx, release := handle(parent, sigs, log, os.Exit)
	return ctx, func() {
		signal.Stop(sigs)
		release()
	}
}

// handle cancels the returned context on the first value of sigs and calls
// exit(1) on the second.
func handle(parent context.Context, sigs <-chan os.Signal, log logr.Logger, exit func(int)) (context.Context, func()) {
	ctx, cancel := context.WithCancel(parent)
	released := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		select {
		case s := <-sigs:
			log.Info("stopping: signal received; a second signal exits at once", "signal", s.String())
			cancel()
		case <-released:
			return
		}
		select {
		case s := <-sigs:
			log.Info("exiting at once: second signal", "signal", s.String())
			exit(1)
		case <-released:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			close(released)
			<-finished
			cancel()
		})
	}
}
