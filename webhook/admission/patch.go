package admission

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	"k8s.io/apimachinery/pkg/runtime"
)

// podPatch is the JSON patch that turns raw, the object as the API server
// sent it, into after. before is raw decoded into the Go types, after is the
// injected copy of before.
//
// The patch is the difference between before and after, so it only says
// what the injection changed, and it is addressed into raw, so it is applied
// to the object as the API server has it, fields our Go types do not know
// (a newer API server's) included:
//   - lists are aligned, not compared by index: elements are matched by
//     their name (containers, init containers, volumes, env, ports) or, when
//     they have none, by their whole value, so the sidecar goes in with one
//     add at /spec/initContainers/0 and the user's init containers, which
//     are only shifted, get no operation at all;
//   - an object the injection changed is patched member by member, so the
//     members we do not know stay as they are; a member is removed only
//     when the injection removed it (e.g. the httpGet of a wrapped preStop);
//   - a changed scalar or a member missing in raw (where the Go types
//     serialise a default, such as resources: {}) is added or replaced
//     whole, and only then does a value of ours replace one of the user's.
func podPatch(raw []byte, before, after runtime.Object) ([]jsonpatch.JsonPatchOperation, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var r any
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("reading the admission request's object: %w", err)
	}
	// The typed objects as JSON would have them (same members, omitempty
	// and marshalers), without a JSON round trip.
	b, err := runtime.DefaultUnstructuredConverter.ToUnstructured(before)
	if err != nil {
		return nil, err
	}
	a, err := runtime.DefaultUnstructuredConverter.ToUnstructured(after)
	if err != nil {
		return nil, err
	}
	var d differ
	d.diff(r, b, a, true)
	return d.ops, nil
}

// differ collects the operations; path is the JSON pointer being diffed,
// as escaped tokens.
type differ struct {
	ops  []jsonpatch.JsonPatchOperation
	path []string
}

func (d *differ) op(op string, v any) {
	p := ""
	if len(d.path) > 0 {
		p = "/" + strings.Join(d.path, "/")
	}
	d.ops = append(d.ops, jsonpatch.JsonPatchOperation{Operation: op, Path: p, Value: v})
}

func (d *differ) push(token string) { d.path = append(d.path, token) }
func (d *differ) pop()              { d.path = d.path[:len(d.path)-1] }

// diff adds the operations that turn raw, at d.path, into after; before is
// raw as the Go types see it. inRaw says raw has a value there (possibly
// null): a value that changes whole replaces it, or is added.
func (d *differ) diff(raw, before, after any, inRaw bool) {
	switch b := before.(type) {
	case map[string]any:
		a, okA := after.(map[string]any)
		r, okR := raw.(map[string]any)
		if okA && okR {
			d.object(r, b, a)
			return
		}
	case []any:
		a, okA := after.([]any)
		r, okR := raw.([]any)
		if okA && okR && len(r) == len(b) {
			d.list(r, b, a)
			return
		}
	}
	// raw has no object or list to patch here: only a change is written.
	if reflect.DeepEqual(before, after) {
		return
	}
	if inRaw {
		d.op("replace", after)
		return
	}
	d.op("add", after)
}

func (d *differ) object(raw, before, after map[string]any) {
	keys := make([]string, 0, len(after)+1)
	for k := range before {
		keys = append(keys, k)
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		bv, inBefore := before[k]
		av, inAfter := after[k]
		rv, inRaw := raw[k]
		d.push(escape(k))
		switch {
		case inBefore && inAfter:
			d.diff(rv, bv, av, inRaw)
		case inAfter:
			d.op("add", av)
		case inRaw:
			d.op("remove", nil)
		}
		d.pop()
	}
}

// list aligns before and after on the longest common subsequence of their
// elements' keys and patches in order: matched elements member by member,
// others removed or inserted. Each operation's index is the element's
// position once the operations before it are applied, as JSON patch wants.
func (d *differ) list(raw, before, after []any) {
	bk, ak := keys(before), keys(after)
	if slices.Equal(bk, ak) {
		for i := range before {
			d.push(strconv.Itoa(i))
			d.diff(raw[i], before[i], after[i], true)
			d.pop()
		}
		return
	}
	// lcs[i][j] is the length of the common subsequence of bk[i:], ak[j:].
	lcs := make([][]int, len(bk)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(ak)+1)
	}
	for i := len(bk) - 1; i >= 0; i-- {
		for j := len(ak) - 1; j >= 0; j-- {
			if bk[i] == ak[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j, pos := 0, 0, 0
	for i < len(bk) || j < len(ak) {
		d.push(strconv.Itoa(pos))
		switch {
		case i < len(bk) && j < len(ak) && bk[i] == ak[j]:
			d.diff(raw[i], before[i], after[j], true)
			i, j, pos = i+1, j+1, pos+1
		case j < len(ak) && (i == len(bk) || lcs[i][j+1] >= lcs[i+1][j]):
			d.op("add", after[j])
			j, pos = j+1, pos+1
		default:
			d.op("remove", nil)
			i++
		}
		d.pop()
	}
}

// keys identify list elements: objects by their name, when they have one,
// anything else by its value.
func keys(l []any) []string {
	out := make([]string, len(l))
	for i, v := range l {
		switch v := v.(type) {
		case string:
			out[i] = "string\x00" + v
			continue
		case map[string]any:
			if n, ok := v["name"].(string); ok {
				out[i] = "name\x00" + n
				continue
			}
		}
		b, _ := json.Marshal(v) // converted JSON always marshals; maps in key order
		out[i] = "value\x00" + string(b)
	}
	return out
}

// escape makes a member name a JSON pointer token (RFC 6901).
func escape(s string) string {
	if !strings.ContainsAny(s, "~/") {
		return s
	}
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}
