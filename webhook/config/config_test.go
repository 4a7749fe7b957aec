package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestParseDefaults(t *testing.T) {
	for _, in := range []string{"", "\n", "# only a comment\n", "{}"} {
		got, err := Parse([]byte(in), "v1.2.3")
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		if diff := cmp.Diff(Default("v1.2.3"), got); diff != "" {
			t.Errorf("Parse(%q) differs from the defaults:\n%s", in, diff)
		}
	}
	if img := Default("").Sidecar.Image; img != DefaultImageRepository+":dev" {
		t.Errorf("image without a version = %q", img)
	}
}

func TestParseOverrides(t *testing.T) {
	in := `
destination: s3://dumps/prod?region=eu-west-1
credentialsSecret: s3-creds
mountPath: /var/dumps
sizeLimit: 8Gi
preStop: always
minTerminationGracePeriodSeconds: 120
nativeSidecar: never
excludedNamespaces: [monitoring]
sidecar:
  image: registry.internal/dumpcatcher:1.0
  imagePullPolicy: Always
  resources:
    requests: {cpu: 50m}
upload:
  compression: zstd
  keyTemplate: "{namespace}/{pod}/{time}-{file}"
  quietPeriod: 30s
  drainTimeout: 1m
  metricsPort: 9464
`
	got, err := Parse([]byte(in), "v1")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Destination: "s3://dumps/prod?region=eu-west-1", CredentialsSecret: "s3-creds", MountPath: "/var/dumps",
		SizeLimit: "8Gi", PreStop: "always", MinTerminationGracePeriodSeconds: 120, NativeSidecar: NativeNever,
		ExcludedNamespaces: []string{"monitoring"},
		Sidecar: Sidecar{Image: "registry.internal/dumpcatcher:1.0", ImagePullPolicy: corev1.PullAlways,
			// resources given replace the defaults whole
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m")}}},
		Upload: Upload{Compression: "zstd", KeyTemplate: "{namespace}/{pod}/{time}-{file}", QuietPeriod: "30s", DrainTimeout: "1m", MetricsPort: 9464},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	tests := []struct{ in, want string }{
		{"destnation: s3://x", `unknown field "destnation"`},
		{"sidecar: {imag: x}", `unknown field "sidecar.imag"`},
		{"destination: gs://bucket", `destination: unsupported scheme "gs"`},
		{"credentialsSecret: Bad_Name", `credentialsSecret: "Bad_Name" is not a valid Secret name`},
		{"mountPath: relative", `mountPath: "relative" must be a clean absolute path`},
		{"mountPath: /", `mountPath: "/" must be`},
		{"mountPath: /a b", `mountPath: "/a b" must be`},
		{"sizeLimit: lots", `sizeLimit: "lots" is not a quantity`},
		{"sizeLimit: \"0\"", `sizeLimit: "0" must be greater than zero`},
		{"preStop: sometimes", `preStop: "sometimes" is not one of always, on-pressure, never`},
		{"minTerminationGracePeriodSeconds: -1", `minTerminationGracePeriodSeconds: -1 is outside 0..3600`},
		{"minTerminationGracePeriodSeconds: ten", `minTerminationGracePeriodSeconds`},
		{"nativeSidecar: sometimes", `nativeSidecar: "sometimes" is not one of auto, always, never`},
		{"excludedNamespaces: [Kube_System]", `excludedNamespaces[0]: "Kube_System" is not a namespace name`},
		{"sidecar: {image: \"\"}", `sidecar.image: "" is not an image reference`},
		{"sidecar: {imagePullPolicy: Sometimes}", `sidecar.imagePullPolicy: "Sometimes" is not one of Always, IfNotPresent, Never`},
		{"sidecar: {resources: {requests: {memory: 1Gi}, limits: {memory: 64Mi}}}", `sidecar.resources.requests.memory: 1Gi is above the limit 64Mi`},
		{"- a list", `cannot unmarshal`},
		{"upload: {compresion: gzip}", `unknown field "upload.compresion"`},
		{"upload: {compression: brotli}", `upload.compression: "brotli" is not one of gzip, zstd, none`},
		{"upload: {keyTemplate: \"{namespace}/{nope}\"}", `upload.keyTemplate: key template "{namespace}/{nope}": unknown placeholder {nope}`},
		{"upload: {keyTemplate: \"a b/{file}\"}", `upload.keyTemplate: key template "a b/{file}": character ' ' is not allowed`},
		{"upload: {quietPeriod: \"2\"}", `upload.quietPeriod: "2" is not a positive duration`},
		{"upload: {quietPeriod: 2}", `upload.quietPeriod of type string`},
		{"upload: {quietPeriod: 0s}", `upload.quietPeriod: "0s" is not a positive duration`},
		{"upload: {drainTimeout: soon}", `upload.drainTimeout: "soon" is not a positive duration`},
		{"upload: {metricsPort: 70000}", `upload.metricsPort: 70000 is not a port number (1..65535)`},
		{"upload: {metricsPort: -1}", `upload.metricsPort: -1 is not a port number`},
		{"upload: {metricsPort: http}", `upload.metricsPort`},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.in), "v1")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) error = %v, want it to contain %q", tt.in, err, tt.want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("destination: s3://dumps\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(good, "v1")
	if err != nil || c.Destination != "s3://dumps" {
		t.Fatalf("Load = %+v, %v", c, err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("preStop: maybe\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad, "v1"); err == nil || !strings.Contains(err.Error(), bad+": preStop") {
		t.Errorf("Load(bad) = %v, want the file and the field named", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), "v1"); err == nil || !strings.Contains(err.Error(), "reading config") {
		t.Errorf("Load(missing) = %v", err)
	}
}

// TestErrorsKeepSecrets: the webhook logs configuration errors at start; a
// destination with credentials is refused without repeating them.
func TestErrorsKeepSecrets(t *testing.T) {
	for _, in := range []string{
		"destination: s3://AKIAEXAMPLE:wJalrSECRET@dumps/p",
		"destination: s3://AKIAEXAMPLE:wJal/rSECRET@dumps/p",
		"destination: s3://dumps/p?endpoint=https://AKIAEXAMPLE:wJalrSECRET@minio:9000",
		"destination: [s3://AKIAEXAMPLE:wJalrSECRET@dumps/p]",
		"destination: {url: s3://AKIAEXAMPLE:wJalrSECRET@dumps/p}",
	} {
		_, err := Parse([]byte(in), "v1")
		if err == nil {
			t.Errorf("Parse(%q) accepted it", in)
			continue
		}
		if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "AKIAEXAMPLE") {
			t.Errorf("Parse(%q) error repeats the secret: %v", in, err)
		}
	}
}

func TestUploadChanged(t *testing.T) {
	tests := []struct{ in, want Upload }{
		{Upload{}, Upload{}},
		{Upload{Compression: "gzip", KeyTemplate: "{namespace}/{workload}/{pod}/{container}/{time}-{reason}-{file}", QuietPeriod: "120s", DrainTimeout: "25s"}, Upload{}},
		{Upload{Compression: "zstd", KeyTemplate: "{pod}/{time}-{file}", QuietPeriod: "1m", DrainTimeout: "25000ms", MetricsPort: 9090},
			Upload{Compression: "zstd", KeyTemplate: "{pod}/{time}-{file}", QuietPeriod: "1m", MetricsPort: 9090}},
	}
	for _, tt := range tests {
		if got := tt.in.Changed(); got != tt.want {
			t.Errorf("%+v.Changed() = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}
