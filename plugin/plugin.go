// Package plugin is `kubectl dumpcatcher`: list, get, download and delete
// the Dumps of the dumps.dumpcatcher.io API, and take one on demand, with
// the user's own kubeconfig identity (k8s.io/cli-runtime's flags: every
// context, auth plugin and impersonation kubectl has).
package plugin

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// deps are the seams tests replace.
type deps struct {
	// executor builds the pods/exec runner of `dump`.
	executor func(c *client) Executor
	// now is the clock.
	now func() time.Time
	// isTerminal tells whether w is a terminal (progress bar vs lines).
	isTerminal func(w io.Writer) bool
}

func defaultDeps() deps {
	return deps{executor: newRemoteExecutor, now: time.Now, isTerminal: isTerminal}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// app is the state the commands share.
type app struct {
	streams genericiooptions.IOStreams
	flags   *genericclioptions.ConfigFlags
	deps    deps
	c       *client
}

// NewRootCommand returns the `kubectl dumpcatcher` command. flags are the
// kubeconfig flags (genericclioptions.NewConfigFlags(true)); the command
// adds them to its persistent flags. Run it with ExecuteContext.
func NewRootCommand(streams genericiooptions.IOStreams, flags *genericclioptions.ConfigFlags) *cobra.Command {
	return newRoot(streams, flags, defaultDeps())
}

func newRoot(streams genericiooptions.IOStreams, flags *genericclioptions.ConfigFlags, d deps) *cobra.Command {
	a := &app{streams: streams, flags: flags, deps: d}
	root := &cobra.Command{
		Use:   "kubectl-dumpcatcher",
		Short: "List, download and take heap dumps through the dumps.dumpcatcher.io API",
		Long: `kubectl dumpcatcher reaches the heap dumps dumpcatcher uploaded, through the
Kubernetes API and its RBAC (the dumps.dumpcatcher.io aggregated API), with your
kubeconfig identity: no bucket credentials needed.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Annotations: map[string]string{
			cobra.CommandDisplayNameAnnotation: "kubectl dumpcatcher",
		},
	}
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	flags.AddFlags(root.PersistentFlags())
	root.AddCommand(a.listCmd(), a.getCmd(), a.downloadCmd(), a.deleteCmd(), a.dumpCmd(), a.uiCmd())
	return root
}

// client builds the API client once, after the flags are parsed.
func (a *app) client() (*client, error) {
	if a.c != nil {
		return a.c, nil
	}
	c, err := newClient(a.flags)
	if err != nil {
		return nil, err
	}
	a.c = c
	return c, nil
}

// namespace is -n or the kubeconfig context's namespace.
func (a *app) namespace() (string, error) {
	ns, _, err := a.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", err
	}
	return ns, nil
}

// printable quotes s when it holds control characters (the store's
// strings are not trusted to be harmless on a terminal).
func printable(s string) string {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return strconv.Quote(s)
		}
	}
	return s
}

// age renders a duration like kubectl's AGE column.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// commandLine is the command that fetches dump name of namespace.
func commandLine(namespace, name string) string {
	return strings.Join([]string{"kubectl", "dumpcatcher", "download", name, "-n", namespace}, " ")
}
