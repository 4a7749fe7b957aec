package inject

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/webhook/config"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from the current output")

// goldenCase is one testdata/NAME.yaml file.
type goldenCase struct {
	// Namespace of the pod (default "default").
	Namespace       string            `json:"namespace"`
	NamespaceLabels map[string]string `json:"namespaceLabels"`
	// Config is applied over testConfig.
	Config map[string]any `json:"config"`
	// NativeSidecar defaults to true.
	NativeSidecar *bool      `json:"nativeSidecar"`
	Pod           corev1.Pod `json:"pod"`
}

// goldenResult is one testdata/NAME.golden.yaml file.
type goldenResult struct {
	Injected bool        `json:"injected"`
	Reason   string      `json:"reason,omitempty"`
	Error    string      `json:"error,omitempty"`
	Warnings []string    `json:"warnings,omitempty"`
	Pod      *corev1.Pod `json:"pod,omitempty"`
}

const testVersion = "v0.0.0-test"

// testConfig is the configuration goldens start from.
const testConfig = `
destination: s3://heap-dumps/cluster-a?endpoint=http://minio.minio.svc:9000&path-style=true
credentialsSecret: dumpcatcher-s3
sidecar:
  image: registry.example/dumpcatcher:v0.0.0-test
`

func loadCase(t testing.TB, file string) (Input, Options) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var gc goldenCase
	if err := yaml.UnmarshalStrict(data, &gc); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return caseInput(t, gc)
}

func caseInput(t testing.TB, gc goldenCase) (Input, Options) {
	t.Helper()
	base, err := config.Parse([]byte(testConfig), testVersion)
	if err != nil {
		t.Fatal(err)
	}
	if gc.Config != nil {
		over, err := yaml.Marshal(gc.Config)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.UnmarshalStrict(over, &base); err != nil {
			t.Fatalf("config: %v", err)
		}
		if err := base.Validate(); err != nil {
			t.Fatalf("config: %v", err)
		}
	}
	ns := gc.Namespace
	if ns == "" {
		ns = "default"
	}
	native := true
	if gc.NativeSidecar != nil {
		native = *gc.NativeSidecar
	}
	pod := gc.Pod
	return Input{Pod: &pod, Namespace: ns, NamespaceLabels: gc.NamespaceLabels},
		Options{Config: base, NativeSidecar: native, OwnNamespace: "dumpcatcher-system", Version: testVersion}
}

func run(in Input, opts Options) goldenResult {
	res, err := Inject(in, opts)
	if err != nil {
		return goldenResult{Error: err.Error()}
	}
	return goldenResult{Injected: res.Injected, Reason: res.Reason, Warnings: res.Warnings, Pod: res.Pod}
}

func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	n := 0
	for _, file := range inputs {
		if strings.HasSuffix(file, ".golden.yaml") {
			continue
		}
		n++
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		golden := strings.TrimSuffix(file, ".yaml") + ".golden.yaml"
		seen[golden] = true
		t.Run(name, func(t *testing.T) {
			in, opts := loadCase(t, file)
			got := run(in, opts)
			out, err := yaml.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("no golden file (run go test ./webhook/inject -update): %v", err)
			}
			if !bytes.Equal(out, want) {
				t.Fatalf("%s is stale (run go test ./webhook/inject -update and review the diff):\n%s", golden, cmp.Diff(string(want), string(out)))
			}
			checkInvariants(t, in, opts, got)
		})
	}
	if n < 20 {
		t.Errorf("only %d golden cases; the injection needs at least 20 pod shapes", n)
	}
	goldens, _ := filepath.Glob("testdata/*.golden.yaml")
	for _, g := range goldens {
		if !seen[g] {
			t.Errorf("%s has no input file: remove it", g)
		}
	}
}

// checkInvariants holds for every result: re-injection changes nothing, also
// when the status annotation was stripped, and JAVA_TOOL_OPTIONS never
// references a variable that may be undefined.
func checkInvariants(t testing.TB, in Input, opts Options, got goldenResult) {
	t.Helper()
	if got.Error != "" {
		var ae *AnnotationError
		if _, err := Inject(in, opts); !errors.As(err, &ae) {
			t.Errorf("error is not an *AnnotationError: %v", err)
		}
		return
	}
	if !got.Injected {
		if diff := cmp.Diff(in.Pod, got.Pod); diff != "" {
			t.Errorf("pod not injected but changed:\n%s", diff)
		}
		return
	}
	again, err := Inject(Input{Pod: got.Pod, Namespace: in.Namespace, NamespaceLabels: in.NamespaceLabels}, opts)
	if err != nil {
		t.Fatalf("re-injection failed: %v", err)
	}
	if again.Injected {
		t.Errorf("re-injection injected again: %s", again.Reason)
	}
	if diff := cmp.Diff(got.Pod, again.Pod); diff != "" {
		t.Errorf("re-injection changed the pod:\n%s", diff)
	}
	stripped := got.Pod.DeepCopy()
	delete(stripped.Annotations, AnnotationStatus)
	again, err = Inject(Input{Pod: stripped, Namespace: in.Namespace, NamespaceLabels: in.NamespaceLabels}, opts)
	if err != nil || again.Injected {
		t.Errorf("re-injection without the status annotation: injected=%v err=%v", again.Injected, err)
	}
	if _, err := ParseStatus(got.Pod.Annotations[AnnotationStatus]); err != nil {
		t.Errorf("status annotation: %v", err)
	}
	for _, c := range got.Pod.Spec.Containers {
		if msg := unsafeReference(c); msg != "" {
			t.Errorf("container %q: %s", c.Name, msg)
		}
	}
	checkGracePeriodEnv(t, got.Pod)
	checkErrorFile(t, in.Pod, got.Pod)
}

// checkErrorFile: every injected container's JAVA_TOOL_OPTIONS ends with our
// -XX:ErrorFile into its dump directory, unless the user's literal
// JAVA_TOOL_OPTIONS sets one: then that one is kept and is the one HotSpot
// uses (the last -XX:ErrorFile of the value), and ours is not added.
func checkErrorFile(t testing.TB, before, after *corev1.Pod) {
	t.Helper()
	st, err := ParseStatus(after.Annotations[AnnotationStatus])
	if err != nil {
		return
	}
	// Containers are found by name; a pod with two containers of one name is
	// invalid (the API server refuses it after admission), and the fuzzer
	// makes such pods: nothing to check by name there.
	seen := map[string]bool{}
	for _, c := range before.Spec.Containers {
		if seen[c.Name] {
			return
		}
		seen[c.Name] = true
	}
	for _, cs := range st.Containers {
		orig, ok := containerNamed(before, cs.Name)
		injected, ok2 := containerNamed(after, cs.Name)
		if !ok || !ok2 {
			t.Errorf("status names container %q, which the pod lacks", cs.Name)
			continue
		}
		dumpDir := cs.MountPath + "/" + contract.DumpsDir
		ours := contract.ErrorFileOption(dumpDir)
		jto := ""
		for _, e := range injected.Env {
			if e.Name == JTOEnv {
				jto = e.Value
			}
		}
		userFile, literal := literalErrorFile(orig.Env)
		if !literal {
			if !strings.HasSuffix(jto, " "+ours) {
				t.Errorf("container %q: %s = %q does not end with %s", cs.Name, JTOEnv, jto, ours)
			}
			continue
		}
		var last string
		for _, tok := range splitOptions(jto) {
			if v, ok := strings.CutPrefix(unquote(tok), contract.OptErrorFile); ok {
				last = v
			}
		}
		if last != userFile || strings.HasSuffix(jto, ours) && userFile != contract.ErrorFilePath(dumpDir) {
			t.Errorf("container %q: the user's -XX:ErrorFile=%s is not the one in effect in %q", cs.Name, userFile, jto)
		}
	}
}

func containerNamed(pod *corev1.Pod, name string) (corev1.Container, bool) {
	for _, c := range pod.Spec.Containers {
		if c.Name == name {
			return c, true
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == name {
			return c, true
		}
	}
	return corev1.Container{}, false
}

// checkGracePeriodEnv: the uploader learns the pod's grace period as it
// will be (after raising), the kubelet's default when the pod sets none.
func checkGracePeriodEnv(t testing.TB, pod *corev1.Pod) {
	t.Helper()
	st, err := ParseStatus(pod.Annotations[AnnotationStatus])
	if err != nil {
		return
	}
	want := "30"
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		want = strconv.FormatInt(*g, 10)
	}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			if c.Name != st.Sidecar {
				continue
			}
			for _, e := range c.Env {
				if e.Name == contract.EnvGracePeriod {
					if e.Value != want {
						t.Errorf("sidecar %s = %q, want the pod's grace period %s", contract.EnvGracePeriod, e.Value, want)
					}
					return
				}
			}
		}
	}
	t.Errorf("sidecar %q has no %s", st.Sidecar, contract.EnvGracePeriod)
}

// unsafeReference returns a message when a JAVA_TOOL_OPTIONS value written by
// the webhook references a variable that is not surely defined before it.
func unsafeReference(c corev1.Container) string {
	defined := map[string]bool{}
	for _, e := range c.Env {
		if e.Name == JTOEnv && strings.Contains(e.Value, "$("+OriginalJTOEnv+")") && !defined[OriginalJTOEnv] {
			return JTOEnv + " references " + OriginalJTOEnv + " before it is surely defined"
		}
		if e.ValueFrom == nil || !isOptional(e.ValueFrom) {
			defined[e.Name] = true
		}
	}
	return ""
}
