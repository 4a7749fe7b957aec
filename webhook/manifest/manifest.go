// Package manifest applies dumpcatcher's injection offline to a stream of
// Kubernetes manifests, like `istioctl kube-inject`, so that the result can
// be reviewed in CI or committed to a GitOps repository.
//
// Pods and the pod templates of Deployments, StatefulSets, DaemonSets,
// ReplicaSets, Jobs and CronJobs (also as items of a v1 List) go through
// inject.Inject. Every other document, and every document that ends up not
// injected, is written back byte for byte. An injected document is
// re-serialised; only what the injection changed differs from the input:
// fields unknown to k8s.io/api and values spelled differently from the
// canonical form (cpu: 0.5 for 500m) keep their original form, and the
// comment lines at the top of the document are kept.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"strconv"
	"strings"

	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"sigs.k8s.io/yaml"
)

// DefaultNamespace is the namespace of objects that name none when
// Params.Namespace is empty.
const DefaultNamespace = "default"

// Params are what the cluster would tell the webhook but a file cannot.
type Params struct {
	// Namespace for objects without metadata.namespace (default "default").
	Namespace string
	// NamespaceLabels stand in for the labels of every object's namespace.
	NamespaceLabels map[string]string
}

// Inject reads a multi-document YAML (or JSON) stream and writes it back with
// Pods and the pod templates of Deployments, StatefulSets, DaemonSets,
// ReplicaSets, Jobs (spec.template) and CronJobs
// (spec.jobTemplate.spec.template) injected by inject.Inject with the same
// Options. Returns warnings (each prefixed with "<kind>/<name>: ").
//
// Documents keep their order and are separated by "---\n"; empty documents
// are dropped. A stream of JSON values (the first byte that is not white
// space is "{") is written back as a stream of JSON values, one per line.
// Nothing is written unless the whole stream was processed: an error names
// the document ("document 3 (Deployment/web): ...") and may wrap an
// *inject.AnnotationError, the reason the webhook would deny the pod.
func Inject(r io.Reader, w io.Writer, p Params, opts inject.Options) ([]string, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading manifests: %w", err)
	}
	if p.Namespace == "" {
		p.Namespace = DefaultNamespace
	}
	docs, isJSON := splitJSON(data)
	if !isJSON {
		docs = splitYAML(data)
	}
	inj := &injector{params: p, opts: opts}
	var out bytes.Buffer
	for i, d := range docs {
		text, err := inj.document(d, isJSON)
		if err != nil {
			return inj.warnings, fmt.Errorf("document %d %w", i+1, err)
		}
		if i > 0 && !isJSON {
			out.WriteString("---\n")
		}
		out.Write(text)
		if !bytes.HasSuffix(text, []byte("\n")) {
			out.WriteByte('\n')
		}
	}
	if _, err := w.Write(out.Bytes()); err != nil {
		return inj.warnings, err
	}
	return inj.warnings, nil
}

// document is one document of the stream as it was written.
type document struct {
	text []byte
	line int // where it starts in the stream, 1-based
}

// splitYAML cuts a YAML stream at the lines that start a document ("---"
// alone or followed by white space). Whatever follows "---" on its line
// (a comment, say) becomes the first line of the document. Documents that
// are only white space are dropped; comment-only documents are kept.
func splitYAML(data []byte) []document {
	var docs []document
	var cur []byte
	start := 1
	flush := func() {
		if len(bytes.TrimSpace(cur)) > 0 {
			docs = append(docs, document{text: cur, line: start})
		}
		cur = nil
	}
	for n := 1; len(data) > 0; n++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line = data[:i+1]
		}
		data = data[len(line):]
		content := bytes.TrimRight(line, "\r\n")
		rest, ok := bytes.CutPrefix(content, []byte("---"))
		if !ok || (len(rest) > 0 && rest[0] != ' ' && rest[0] != '\t') {
			cur = append(cur, line...)
			continue
		}
		flush()
		start = n + 1
		if rest = bytes.TrimLeft(rest, " \t"); len(rest) > 0 {
			start = n
			cur = append(append(cur, rest...), line[len(content):]...)
		}
	}
	flush()
	return docs
}

// splitJSON cuts a stream of JSON values; ok is false when data is not one.
func splitJSON(data []byte) (docs []document, ok bool) {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return docs, true
		}
		if err != nil {
			return nil, false // not JSON after all: let the YAML parser say why
		}
		end := int(dec.InputOffset())
		begin := end - len(raw)
		docs = append(docs, document{text: data[begin:end], line: 1 + bytes.Count(data[:begin], []byte("\n"))})
	}
}

type injector struct {
	params   Params
	opts     inject.Options
	warnings []string
}

// document returns the text to write for d. Its error starts with the part
// of the message that follows "document N ".
func (inj *injector) document(d document, isJSON bool) ([]byte, error) {
	j := d.text
	if !isJSON {
		var err error
		if j, err = yaml.YAMLToJSON(d.text); err != nil {
			return nil, yamlError(err, d.line)
		}
	}
	var v any
	if err := utiljson.Unmarshal(j, &v); err != nil {
		return nil, fmt.Errorf("(line %d): %w", d.line, err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return d.text, nil // a comment-only document, a scalar, a list
	}
	changed, id, err := inj.object(obj)
	if err != nil {
		return nil, fmt.Errorf("(%s): %w", id, err)
	}
	if !changed {
		return d.text, nil
	}
	if isJSON {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(obj); err != nil {
			return nil, fmt.Errorf("(%s): %w", id, err)
		}
		return b.Bytes(), nil
	}
	y, err := yaml.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("(%s): %w", id, err)
	}
	return append(headComments(d.text), y...), nil
}

// yamlError makes the line number of a YAML parser's error count from the
// start of the stream instead of the document.
func yamlError(err error, start int) error {
	msg := err.Error()
	const marker = "yaml: line "
	i := strings.Index(msg, marker)
	if i < 0 {
		return fmt.Errorf("(line %d): %w", start, err)
	}
	digits := msg[i+len(marker):]
	digits = digits[:len(digits)-len(strings.TrimLeft(digits, "0123456789"))]
	n, convErr := strconv.Atoi(digits)
	if convErr != nil {
		return fmt.Errorf("(line %d): %w", start, err)
	}
	return fmt.Errorf("(line %d): %s%s%d%s", start, msg[:i], marker, start+n-1, msg[i+len(marker)+len(digits):])
}

// headComments returns the comment lines at the top of a YAML document (and
// blank lines between them).
func headComments(text []byte) []byte {
	end := 0
	for rest := text; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
		}
		rest = rest[len(line):]
		t := bytes.TrimSpace(line)
		if len(t) > 0 && t[0] != '#' {
			break
		}
		if len(t) > 0 {
			end = len(text) - len(rest)
		}
	}
	head := text[:end:end]
	if len(head) > 0 && !bytes.HasSuffix(head, []byte("\n")) {
		head = append(head, '\n')
	}
	return head
}

// object injects obj in place if it is a kind with a pod (template), and
// names the object an error is about ("Deployment/web").
func (inj *injector) object(obj map[string]any) (changed bool, id string, err error) {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	if name == "" {
		name, _ = meta["generateName"].(string)
		name = strings.TrimRight(name, "-")
	}
	id = kind + "/" + name
	if name == "" {
		id = kind
	}
	gv, err := schema.ParseGroupVersion(apiVersion)
	if apiVersion == "" || err != nil {
		return false, id, nil
	}
	if kind == "List" && gv.Group == "" {
		items, _ := obj["items"].([]any)
		for i, it := range items {
			item, ok := it.(map[string]any)
			if !ok {
				continue
			}
			c, itemID, err := inj.object(item)
			if err != nil {
				return false, fmt.Sprintf("List item %d: %s", i+1, itemID), err
			}
			changed = changed || c
		}
		return changed, id, nil
	}
	path, ok := templatePath(gv.Group, kind)
	if !ok {
		return false, id, nil
	}
	ns, _ := meta["namespace"].(string)
	if ns == "" {
		ns = inj.params.Namespace
	}
	if path == nil {
		changed, err = inj.pod(obj, ns, id)
	} else {
		changed, err = inj.template(obj, path, ns, inject.Workload{Kind: kind, Name: name}, id)
	}
	if changed {
		dropNullCreationTimestamp(obj)
	}
	return changed, id, err
}

// templatePath says where the pod template of a kind is: nil for a Pod,
// ok false for kinds without pods.
func templatePath(group, kind string) (path []string, ok bool) {
	switch {
	case group == "" && kind == "Pod":
		return nil, true
	case (group == "apps" || group == "extensions") &&
		(kind == "Deployment" || kind == "StatefulSet" || kind == "DaemonSet" || kind == "ReplicaSet"):
		return []string{"spec", "template"}, true
	case group == "batch" && kind == "Job":
		return []string{"spec", "template"}, true
	case group == "batch" && kind == "CronJob":
		return []string{"spec", "jobTemplate", "spec", "template"}, true
	}
	return nil, false
}

func (inj *injector) pod(obj map[string]any, ns, id string) (bool, error) {
	var pod corev1.Pod
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &pod); err != nil {
		return false, err
	}
	res, err := inj.inject(inject.Input{Pod: &pod, Namespace: ns, NamespaceLabels: inj.params.NamespaceLabels}, id)
	if err != nil || !res.Injected {
		return false, err
	}
	if err := mergeTyped(obj, &pod, res.Pod); err != nil {
		return false, err
	}
	return true, nil
}

func (inj *injector) template(obj map[string]any, path []string, ns string, wl inject.Workload, id string) (bool, error) {
	parent := obj
	for _, k := range path[:len(path)-1] {
		parent, _ = parent[k].(map[string]any)
	}
	last := path[len(path)-1]
	tmplMap, ok := parent[last].(map[string]any)
	if !ok {
		inj.warnings = append(inj.warnings, fmt.Sprintf("%s: no pod template at %s; not injected", id, strings.Join(path, ".")))
		return false, nil
	}
	var tmpl corev1.PodTemplateSpec
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(tmplMap, &tmpl); err != nil {
		return false, fmt.Errorf("%s: %w", strings.Join(path, "."), err)
	}
	pod := &corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
	res, err := inj.inject(inject.Input{Pod: pod, Namespace: ns, NamespaceLabels: inj.params.NamespaceLabels, Workload: wl}, id)
	if err != nil || !res.Injected {
		return false, err
	}
	if err := mergeTyped(tmplMap, &tmpl, &corev1.PodTemplateSpec{ObjectMeta: res.Pod.ObjectMeta, Spec: res.Pod.Spec}); err != nil {
		return false, err
	}
	dropNullCreationTimestamp(tmplMap)
	if spec, ok := obj["spec"].(map[string]any); ok {
		if jt, ok := spec["jobTemplate"].(map[string]any); ok {
			dropNullCreationTimestamp(jt)
		}
	}
	return true, nil
}

func (inj *injector) inject(in inject.Input, id string) (inject.Result, error) {
	res, err := inject.Inject(in, inj.opts)
	if err != nil {
		return res, err
	}
	for _, w := range res.Warnings {
		inj.warnings = append(inj.warnings, id+": "+w)
	}
	return res, nil
}

// mergeTyped changes orig, the unstructured form of before (a Pod or a
// PodTemplateSpec), the way before changed into after: it applies to orig
// the two-way strategic merge patch from before to after
// (k8s.io/apimachinery's strategicpatch, with the patch strategies and merge
// keys of before's type, so containers, env, volumes... are matched by name,
// mountPath... and keep the order after gives them through
// $setElementOrder; what the injection removed is null in the patch).
// before and after are typed round trips: orig may hold more (fields
// unknown to k8s.io/api) or spell a value differently; what the injection
// did not change is not in the patch and stays as orig has it. orig is
// changed in place.
func mergeTyped(orig map[string]any, before, after any) error {
	a, err := runtime.DefaultUnstructuredConverter.ToUnstructured(before)
	if err != nil {
		return err
	}
	b, err := runtime.DefaultUnstructuredConverter.ToUnstructured(after)
	if err != nil {
		return err
	}
	for _, m := range []map[string]any{orig, a, b} {
		if err := tagDuplicateEnv(m); err != nil {
			return err
		}
	}
	patch, err := strategicpatch.CreateTwoWayMergeMapPatch(a, b, before)
	if err != nil {
		return fmt.Errorf("computing the injection's patch: %w", err)
	}
	merged, err := strategicpatch.StrategicMergeMapPatch(orig, patch, before)
	if err != nil {
		return fmt.Errorf("applying the injection's patch: %w", err)
	}
	untagDuplicateEnv(merged)
	// merged may be orig itself, changed in place, or a new map.
	maps.DeleteFunc(orig, func(k string, _ any) bool {
		_, keep := merged[k]
		return !keep
	})
	maps.Copy(orig, merged)
	return nil
}

// dupTag joins an environment variable's name and the number of earlier
// entries of the same name in its container while the patch is made and
// applied. Strategic merge patch matches env entries by name and cannot
// tell entries of the same name apart (it drops or mixes them up:
// kubernetes/kubernetes#58477), but Kubernetes allows them, users write
// them, and the injection writes them on purpose: an empty definition of
// DUMPCATCHER_ORIGINAL_JAVA_TOOL_OPTIONS before the optional reference that
// may replace it. "=" is in no valid environment variable name.
const dupTag = "=#"

// envEntries calls f with every env entry of every container of the pod
// (template) obj, and the container's list and name ("containers/web").
func envEntries(obj map[string]any, f func(container string, e map[string]any) error) error {
	spec, _ := obj["spec"].(map[string]any)
	for _, list := range []string{"initContainers", "containers", "ephemeralContainers"} {
		cs, _ := spec[list].([]any)
		for _, c := range cs {
			cm, _ := c.(map[string]any)
			container, _ := cm["name"].(string)
			env, _ := cm["env"].([]any)
			for _, e := range env {
				if em, ok := e.(map[string]any); ok {
					if err := f(list+"/"+container, em); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// tagDuplicateEnv makes the names of each container's env entries unique:
// the n-th entry (n > 0) of a name becomes name=#n.
func tagDuplicateEnv(obj map[string]any) error {
	seen := map[string]int{}
	return envEntries(obj, func(container string, e map[string]any) error {
		name, ok := e["name"].(string)
		if !ok {
			return nil
		}
		if strings.Contains(name, dupTag) { // would not come back unchanged
			_, c, _ := strings.Cut(container, "/")
			return fmt.Errorf("container %q: env name %q contains \"=\", which no environment variable name may (Kubernetes rejects it): rename the variable", c, name)
		}
		key := container + "\x00" + name
		if n := seen[key]; n > 0 {
			e["name"] = name + dupTag + strconv.Itoa(n)
		}
		seen[key]++
		return nil
	})
}

// untagDuplicateEnv undoes tagDuplicateEnv.
func untagDuplicateEnv(obj map[string]any) {
	_ = envEntries(obj, func(_ string, e map[string]any) error {
		if name, ok := e["name"].(string); ok {
			e["name"], _, _ = strings.Cut(name, dupTag)
		}
		return nil
	})
}

// dropNullCreationTimestamp removes "creationTimestamp: null", the noise of
// serialised Go objects, from obj's metadata.
func dropNullCreationTimestamp(obj map[string]any) {
	meta, _ := obj["metadata"].(map[string]any)
	if v, ok := meta["creationTimestamp"]; ok && v == nil {
		delete(meta, "creationTimestamp")
	}
}
