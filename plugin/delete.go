package plugin

import (
	"fmt"

	"github.com/dumpcatcher/dumpcatcher/plugin/internal/apierr"
	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func (a *app) deleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME...",
		Short:   "Delete dumps from the store",
		Example: `  kubectl dumpcatcher delete web-1-app-20261129t100000z-oom-k3j5x7a2bq -n shop`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, err := a.namespace()
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			for _, name := range args {
				if err := c.dynamic.Namespace(ns).Delete(cmd.Context(), name, metav1.DeleteOptions{}); err != nil {
					return c.explain(err, apierr.Request{Verb: "delete", Namespace: ns, Name: name})
				}
				fmt.Fprintf(a.streams.Out, "dump %q deleted from namespace %s\n", name, ns)
			}
			return nil
		},
	}
}
