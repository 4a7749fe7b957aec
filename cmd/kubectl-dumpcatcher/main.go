// Command kubectl-dumpcatcher is the kubectl plugin `kubectl dumpcatcher`:
// list, get, download and delete heap dumps through the dumps.dumpcatcher.io
// API, and take one on demand (see package plugin).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/dumpcatcher/dumpcatcher/internal/signals"
	"github.com/dumpcatcher/dumpcatcher/plugin"
	"github.com/go-logr/logr/funcr"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	_ "k8s.io/client-go/plugin/pkg/client/auth" // every kubeconfig auth plugin (exec, oidc, ...)
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	log := funcr.New(func(_, a string) { fmt.Fprintln(os.Stderr, "kubectl-dumpcatcher:", a) }, funcr.Options{})
	// The first ctrl-C cancels (a download keeps its .part file to resume),
	// a second exits at once.
	ctx, stop := signals.Context(context.Background(), log)
	defer stop()
	cmd := plugin.NewRootCommand(streams, genericclioptions.NewConfigFlags(true))
	cmd.SetArgs(args)
	return cmd.ExecuteContext(ctx)
}
