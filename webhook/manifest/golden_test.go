package manifest

import (
	"bufio"
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/webhook/config"
	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/labels"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.* from the current output")

const testVersion = "v0.0.0-test"

// testConfig is webhook/inject's golden configuration.
const testConfig = `
destination: s3://heap-dumps/cluster-a?endpoint=http://minio.minio.svc:9000&path-style=true
credentialsSecret: dumpcatcher-s3
sidecar:
  image: registry.example/dumpcatcher:v0.0.0-test
`

func testOptions(t testing.TB) inject.Options {
	t.Helper()
	cfg, err := config.Parse([]byte(testConfig), testVersion)
	if err != nil {
		t.Fatal(err)
	}
	return inject.Options{Config: cfg, NativeSidecar: true, OwnNamespace: "dumpcatcher-system", Version: testVersion}
}

// caseParams reads what a test input says about its cluster in its leading
// comment lines:
//
//	# namespace: shop
//	# labels: dumpcatcher.io/inject=enabled,team=a
//	# nativeSidecar: false
func caseParams(t testing.TB, input []byte) (Params, inject.Options) {
	t.Helper()
	p := Params{}
	opts := testOptions(t)
	sc := bufio.NewScanner(bytes.NewReader(input))
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "#")
		if !ok {
			break
		}
		key, value, _ := strings.Cut(line, ":")
		value = strings.TrimSpace(value)
		switch strings.TrimSpace(key) {
		case "namespace":
			p.Namespace = value
		case "labels":
			set, err := labels.ConvertSelectorToLabelsMap(value)
			if err != nil {
				t.Fatalf("# labels: %v", err)
			}
			p.NamespaceLabels = set
		case "nativeSidecar":
			opts.NativeSidecar = value == "true"
		}
	}
	return p, opts
}

// A golden file is the output stream, preceded by a line "#! warning: W"
// for every warning and, when Inject fails, a line "#! error: E" instead of
// any output.
const (
	warningPrefix = "#! warning: "
	errorPrefix   = "#! error: "
)

func render(out []byte, warnings []string, err error) []byte {
	var b bytes.Buffer
	for _, w := range warnings {
		b.WriteString(warningPrefix + w + "\n")
	}
	if err != nil {
		b.WriteString(errorPrefix + err.Error() + "\n")
	}
	b.Write(out)
	return b.Bytes()
}

// outputOf strips the warning and error lines from a golden file.
func outputOf(golden []byte) []byte {
	for bytes.HasPrefix(golden, []byte("#! ")) {
		_, golden, _ = bytes.Cut(golden, []byte("\n"))
	}
	return golden
}

func TestGolden(t *testing.T) {
	var inputs []string
	for _, pattern := range []string{"testdata/*.yaml", "testdata/*.json"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, m...)
	}
	seen := map[string]bool{}
	n := 0
	for _, file := range inputs {
		ext := filepath.Ext(file)
		if strings.HasSuffix(file, ".golden"+ext) {
			continue
		}
		n++
		golden := strings.TrimSuffix(file, ext) + ".golden" + ext
		seen[golden] = true
		t.Run(strings.TrimSuffix(filepath.Base(file), ext), func(t *testing.T) {
			input, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			p, opts := caseParams(t, input)
			var out bytes.Buffer
			warnings, err := Inject(bytes.NewReader(input), &out, p, opts)
			if err != nil && out.Len() > 0 {
				t.Errorf("failed but wrote %d bytes", out.Len())
			}
			got := render(out.Bytes(), warnings, err)
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("no golden file (run go test ./webhook/manifest -update): %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s is stale (run go test ./webhook/manifest -update and review the diff):\n%s", golden, cmp.Diff(string(want), string(got)))
			}
			if err != nil {
				return
			}
			// Idempotence: the output goes through unchanged.
			var again bytes.Buffer
			warnings, err = Inject(bytes.NewReader(outputOf(want)), &again, p, opts)
			if err != nil {
				t.Fatalf("injecting the output: %v", err)
			}
			if len(warnings) > 0 {
				t.Errorf("injecting the output warned: %q", warnings)
			}
			if diff := cmp.Diff(string(outputOf(want)), again.String()); diff != "" {
				t.Errorf("injecting the output changed it:\n%s", diff)
			}
		})
	}
	if n < 10 {
		t.Errorf("only %d golden cases", n)
	}
	for _, pattern := range []string{"testdata/*.golden.yaml", "testdata/*.golden.json"} {
		goldens, _ := filepath.Glob(pattern)
		for _, g := range goldens {
			if !seen[g] {
				t.Errorf("%s has no input file: remove it", g)
			}
		}
	}
}
