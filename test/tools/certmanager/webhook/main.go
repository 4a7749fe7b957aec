// Command webhook is cert-manager's webhook (validation, mutation and
// conversion of cert-manager's resources) for the e2e rig, built from the
// pinned github.com/cert-manager/cert-manager module: its server, admission
// plugins and flags are the module's (internal/webhook, pkg/webhook/options);
// only this main is ours, because cert-manager's own (cmd/webhook) is a
// separate module the Go module proxy does not serve. It takes the flags
// cert-manager's Helm chart passes. --config is not supported.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/cert-manager/cert-manager/internal/apis/config/webhook/validation"
	cmwebhook "github.com/cert-manager/cert-manager/internal/webhook"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"
	utilfeature "github.com/cert-manager/cert-manager/pkg/util/feature"
	"github.com/cert-manager/cert-manager/pkg/webhook/options"

	"github.com/cert-manager/cert-manager/dumpcatcher-rig/internal/rig"
)

func main() {
	ctx, exit := rig.Start()
	err := run(ctx, os.Args[1:])
	rig.Exit(ctx, "webhook", err, exit)
}

func run(ctx context.Context, args []string) error {
	flags := options.NewWebhookFlags()
	cfg, err := options.NewWebhookConfiguration()
	if err != nil {
		return err
	}
	fs := pflag.NewFlagSet("webhook", pflag.ContinueOnError)
	flags.AddFlags(fs)
	options.AddConfigFlags(fs, cfg)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if flags.Config != "" {
		return fmt.Errorf("--config is not supported by this build (flags only)")
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(cfg.FeatureGates); err != nil {
		return err
	}
	if errs := validation.ValidateWebhookConfiguration(cfg, nil); len(errs) > 0 {
		return errs.ToAggregate()
	}
	if err := logf.ValidateAndApply(&cfg.Logging); err != nil {
		return err
	}
	log := logf.FromContext(ctx, "webhook")
	log.Info("starting", "version", util.AppVersion)
	srv, err := cmwebhook.NewCertManagerWebhookServer(log, *cfg)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}
