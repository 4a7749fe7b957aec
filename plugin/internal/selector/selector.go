// Package selector turns the plugin's filter flags into the label selector
// the dumps API serves (DUMPSAPI.md: the dumpcatcher.io/* labels of a Dump).
package selector

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The labels of a Dump.
const (
	LabelWorkload  = "dumpcatcher.io/workload"
	LabelPod       = "dumpcatcher.io/pod"
	LabelContainer = "dumpcatcher.io/container"
	LabelReason    = "dumpcatcher.io/reason"
)

// Reasons a Dump's reason label takes.
var Reasons = []string{"oom", "prestop", "manual", "crash", "core", "gc-pressure"}

// Filter is what the flags ask for; empty fields do not filter.
type Filter struct {
	Workload  string // --workload, e.g. deployment-web
	Pod       string // --pod
	Container string // --container
	Reason    string // --reason
	// Extra is a raw selector (-l) joined to the others.
	Extra string
}

// Build returns the label selector of f ("" when f filters nothing). An
// invalid value is an error naming the flag.
func Build(f Filter) (string, error) {
	var reqs []labels.Requirement
	for _, c := range []struct{ flag, label, value string }{
		{"--workload", LabelWorkload, f.Workload},
		{"--pod", LabelPod, f.Pod},
		{"--container", LabelContainer, f.Container},
		{"--reason", LabelReason, f.Reason},
	} {
		if c.value == "" {
			continue
		}
		if errs := validation.IsValidLabelValue(c.value); len(errs) > 0 {
			return "", fmt.Errorf("%s %q is not a valid label value: %s", c.flag, c.value, strings.Join(errs, "; "))
		}
		if c.label == LabelReason && !known(c.value) {
			return "", fmt.Errorf("--reason %q is not one of %s", c.value, strings.Join(Reasons, ", "))
		}
		r, err := labels.NewRequirement(c.label, selection.Equals, []string{c.value})
		if err != nil {
			return "", fmt.Errorf("%s %q: %w", c.flag, c.value, err)
		}
		reqs = append(reqs, *r)
	}
	sel := labels.NewSelector().Add(reqs...)
	if f.Extra != "" {
		extra, err := labels.Parse(f.Extra)
		if err != nil {
			return "", fmt.Errorf("-l/--selector %q: %w", f.Extra, err)
		}
		r, _ := extra.Requirements()
		sel = sel.Add(r...)
	}
	parts := strings.Split(sel.String(), ",")
	if sel.Empty() {
		return "", nil
	}
	sort.Strings(parts)
	return strings.Join(parts, ","), nil
}

func known(reason string) bool {
	for _, r := range Reasons {
		if r == reason {
			return true
		}
	}
	return false
}
