package plugin

import (
	"fmt"

	"github.com/dumpcatcher/dumpcatcher/plugin/internal/apierr"
	"github.com/dumpcatcher/dumpcatcher/plugin/internal/selector"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/printers"
)

func (a *app) listCmd() *cobra.Command {
	var (
		all       bool
		f         selector.Filter
		output    string
		noHeaders bool
	)
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the dumps of a namespace (-n) or of all namespaces (-A)",
		Example: `  kubectl dumpcatcher list -n shop
  kubectl dumpcatcher list -A --reason oom
  kubectl dumpcatcher list -n shop --workload deployment-web --pod web-1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sel, err := selector.Build(f)
			if err != nil {
				return err
			}
			ns := ""
			if !all {
				if ns, err = a.namespace(); err != nil {
					return err
				}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			switch output {
			case "json", "yaml", "name":
				l, err := c.list(ctx, ns, sel)
				if err != nil {
					return err
				}
				return printObject(a, output, l)
			case "", "wide":
			default:
				return fmt.Errorf("-o %q: use wide, name, json or yaml", output)
			}
			t, err := c.table(ctx, ns, "", sel)
			if err != nil {
				return c.explain(err, apierr.Request{Verb: "list", Namespace: ns})
			}
			if len(t.Rows) == 0 {
				if all {
					fmt.Fprintln(a.streams.ErrOut, "No dumps found.")
				} else {
					fmt.Fprintf(a.streams.ErrOut, "No dumps found in namespace %s.\n", ns)
				}
				return nil
			}
			p := printers.NewTablePrinter(printers.PrintOptions{WithNamespace: all, Wide: output == "wide", NoHeaders: noHeaders})
			return p.PrintObj(t, a.streams.Out)
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&all, "all-namespaces", "A", false, "list the dumps of every namespace you may list")
	fl.StringVar(&f.Workload, "workload", "", "only this workload's dumps (as in the object key, e.g. deployment-web)")
	fl.StringVar(&f.Pod, "pod", "", "only this pod's dumps")
	fl.StringVar(&f.Container, "container", "", "only this container's dumps")
	fl.StringVar(&f.Reason, "reason", "", "only dumps taken for this reason (oom, prestop, manual, crash, core, gc-pressure)")
	fl.StringVarP(&f.Extra, "selector", "l", "", "a further label selector")
	fl.StringVarP(&output, "output", "o", "", "wide, name, json or yaml (default: the server's table)")
	fl.BoolVar(&noHeaders, "no-headers", false, "omit the table's header")
	return cmd
}

// printObject prints obj as json, yaml or names.
func printObject(a *app, output string, obj runtime.Object) error {
	var p printers.ResourcePrinter
	switch output {
	case "json":
		p = &printers.JSONPrinter{}
	case "yaml":
		p = &printers.YAMLPrinter{}
	case "name":
		p = &printers.NamePrinter{}
	default:
		return fmt.Errorf("-o %q: use json, yaml or name", output)
	}
	return p.PrintObj(obj, a.streams.Out)
}
