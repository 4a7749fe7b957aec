package plugin

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/dumpcatcher/dumpcatcher/plugin/internal/apierr"
	"github.com/dumpcatcher/dumpcatcher/plugin/internal/dumpobj"
	"github.com/dumpcatcher/dumpcatcher/plugin/internal/progress"
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/printers"
)

func (a *app) getCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show one dump: a summary, or -o yaml|json|wide|name",
		Example: `  kubectl dumpcatcher get web-1-app-20261129t100000z-oom-k3j5x7a2bq -n shop
  kubectl dumpcatcher get web-1-app-20261129t100000z-oom-k3j5x7a2bq -n shop -o yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, err := a.namespace()
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if output == "wide" {
				t, err := c.table(ctx, ns, args[0], "")
				if err != nil {
					return c.explain(err, apierr.Request{Verb: "get", Namespace: ns, Name: args[0]})
				}
				return printers.NewTablePrinter(printers.PrintOptions{Wide: true}).PrintObj(t, a.streams.Out)
			}
			u, d, err := c.get(ctx, ns, args[0])
			if err != nil {
				return err
			}
			if output != "" {
				return printObject(a, output, u)
			}
			return summary(a.streams.Out, d, a.deps.now())
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "yaml, json, wide or name (default: a summary)")
	return cmd
}

// summary prints a Dump for people.
func summary(w io.Writer, d dumpobj.Dump, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, printable(v)) }
	complete := "unknown"
	if d.Complete != nil {
		complete = fmt.Sprint(*d.Complete)
	}
	size := progress.Bytes(d.Size) + " stored"
	if d.OriginalSize > 0 {
		size += ", " + progress.Bytes(d.OriginalSize) + " original"
	}
	when := d.Time
	if when.IsZero() {
		when = d.CreationTimestamp
	}
	row("Name", d.Name)
	row("Namespace", d.Namespace)
	row("Workload", d.Workload)
	row("Pod", d.Pod)
	row("Pod UID", d.PodUID)
	row("Node", d.Node)
	row("Container", d.Container)
	row("Reason", d.Reason)
	if !when.IsZero() {
		row("Time", when.UTC().Format(time.RFC3339)+" ("+age(now.Sub(when.Time))+" ago)")
	}
	row("File", d.File)
	row("Encoding", d.Encoding)
	row("Size", size)
	row("Complete", complete)
	row("SHA-256", d.SHA256)
	row("URL", d.URL)
	row("Destination", d.Destination)
	row("Download", commandLine(d.Namespace, d.Name))
	return tw.Flush()
}
