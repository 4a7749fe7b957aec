// Package plugintest runs `kubectl dumpcatcher` in-process against a real
// cluster, for the tests through the real kube-apiserver and dumps API
// server: all it needs is a kubeconfig (one per user, for RBAC tests).
package plugintest

import (
	"bytes"
	"context"

	"github.com/dumpcatcher/dumpcatcher/plugin"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// Run runs `kubectl dumpcatcher --kubeconfig KUBECONFIG ARGS...` and returns
// what it wrote to stdout and stderr.
func Run(ctx context.Context, kubeconfig string, args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: &out, ErrOut: &errOut}
	cmd := plugin.NewRootCommand(streams, genericclioptions.NewConfigFlags(false))
	cmd.SetArgs(append([]string{"--kubeconfig", kubeconfig}, args...))
	err = cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}
