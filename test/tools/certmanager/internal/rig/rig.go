// Package rig is what the three mains of this module share: cert-manager's
// own logging set-up and signal handling (the first SIGTERM cancels the
// context, a second exits), and the exit code of an error.
package rig

import (
	"context"
	"errors"

	"github.com/spf13/pflag"

	cmdutil "github.com/cert-manager/cert-manager/internal/cmd/util"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
)

// Start initialises logging and returns a context cancelled by SIGTERM or
// SIGINT, and the function that exits with the code of a failure.
func Start() (context.Context, func()) {
	logf.InitLogs()
	ctx, exit := cmdutil.SetupExitHandler(context.Background(), cmdutil.GracefulShutdown)
	return logf.NewContext(ctx, logf.Log), exit
}

// Exit logs err, if any, flushes the logs and exits non-zero on an error
// other than the context's cancellation and --help.
func Exit(ctx context.Context, component string, err error, exit func()) {
	if err != nil && !errors.Is(err, pflag.ErrHelp) {
		logf.FromContext(ctx, component).Error(err, "error running "+component)
		cmdutil.SetExitCode(err)
	}
	logf.FlushLogs()
	exit()
}
