// Package podjson walks the user-owned objects of a pod decoded from JSON
// (map[string]any), for tests that put members our Go types do not know
// onto a pod and check that a patch or a merge keeps them where they were.
package podjson

import "fmt"

// Walk calls f with the pod's spec and every init container, container,
// env entry, volume mount and volume, each with where it is, e.g.
// "containers/app/env/JAVA_TOOL_OPTIONS#0" (#n: the n-th entry of that name).
func Walk(pod map[string]any, f func(where string, m map[string]any)) {
	spec, _ := pod["spec"].(map[string]any)
	if spec == nil {
		return
	}
	f("spec", spec)
	for _, key := range []string{"initContainers", "containers"} {
		for _, c := range list(spec, key) {
			where := fmt.Sprintf("%s/%v", key, c["name"])
			f(where, c)
			seen := map[any]int{}
			for _, e := range list(c, "env") {
				f(fmt.Sprintf("%s/env/%v#%d", where, e["name"], seen[e["name"]]), e)
				seen[e["name"]]++
			}
			for _, m := range list(c, "volumeMounts") {
				f(fmt.Sprintf("%s/volumeMounts/%v", where, m["mountPath"]), m)
			}
		}
	}
	for _, v := range list(spec, "volumes") {
		f(fmt.Sprintf("volumes/%v", v["name"]), v)
	}
}

// Mark sets member to where it is on every object Walk visits.
func Mark(pod map[string]any, member string) {
	Walk(pod, func(where string, m map[string]any) { m[member] = where })
}

// Marks lists where member is found and what it says, in Walk's order.
func Marks(pod map[string]any, member string) []string {
	var marks []string
	Walk(pod, func(where string, m map[string]any) {
		if v, ok := m[member]; ok {
			marks = append(marks, fmt.Sprintf("%s: %v", where, v))
		}
	})
	return marks
}

func list(m map[string]any, key string) []map[string]any {
	var out []map[string]any
	l, _ := m[key].([]any)
	for _, e := range l {
		if o, ok := e.(map[string]any); ok {
			out = append(out, o)
		}
	}
	return out
}
