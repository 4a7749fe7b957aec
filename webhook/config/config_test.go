package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
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

// TestParseErrors: every problem of a file is reported at once, each with
// its key's path; YAML that does not fit the schema's types is one plain
// error that names the key.
func TestParseErrors(t *testing.T) {
	p := field.NewPath
	tests := []struct {
		in    string
		want  field.ErrorList
		plain string // a decoding error instead, containing this
	}{
		{in: "destnation: s3://x", want: field.ErrorList{field.Forbidden(p("destnation"), unknownKey)}},
		{in: "sidecar: {imag: x}", want: field.ErrorList{field.Forbidden(p("sidecar.imag"), unknownKey)}},
		{in: "destination: gs://bucket", want: field.ErrorList{field.Invalid(p("destination"), field.OmitValueType{}, `unsupported scheme "gs"; want s3://bucket/prefix or file:///path`)}},
		{in: "credentialsSecret: Bad_Name", want: field.ErrorList{field.Invalid(p("credentialsSecret"), "Bad_Name",
			`"Bad_Name" is not a valid Secret name: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`)}},
		{in: "mountPath: relative", want: field.ErrorList{field.Invalid(p("mountPath"), "relative", `"relative" must be a clean absolute path other than /, without spaces or colons`)}},
		{in: "mountPath: /", want: field.ErrorList{field.Invalid(p("mountPath"), "/", `"/" must be a clean absolute path other than /, without spaces or colons`)}},
		{in: "mountPath: /a b", want: field.ErrorList{field.Invalid(p("mountPath"), "/a b", `"/a b" must be a clean absolute path other than /, without spaces or colons`)}},
		{in: "sizeLimit: lots", want: field.ErrorList{field.Invalid(p("sizeLimit"), "lots", `"lots" is not a quantity such as 4Gi`)}},
		{in: "sizeLimit: \"0\"", want: field.ErrorList{field.Invalid(p("sizeLimit"), "0", `"0" must be greater than zero`)}},
		{in: "preStop: sometimes", want: field.ErrorList{notSupportedErr("preStop", "sometimes", `"sometimes" is not one of always, on-pressure, never`)}},
		{in: "minTerminationGracePeriodSeconds: -1", want: field.ErrorList{field.Invalid(p("minTerminationGracePeriodSeconds"), int64(-1), `-1 is outside 0..3600`)}},
		{in: "minTerminationGracePeriodSeconds: ten", plain: `minTerminationGracePeriodSeconds of type int64`},
		{in: "nativeSidecar: sometimes", want: field.ErrorList{notSupportedErr("nativeSidecar", "sometimes", `"sometimes" is not one of auto, always, never`)}},
		{in: "excludedNamespaces: [ok, Kube_System]", want: field.ErrorList{field.Invalid(p("excludedNamespaces").Index(1), "Kube_System",
			`"Kube_System" is not a namespace name: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`)}},
		{in: "sidecar: {image: \"\"}", want: field.ErrorList{field.Invalid(p("sidecar", "image"), "", `"" is not an image reference`)}},
		{in: "sidecar: {imagePullPolicy: Sometimes}", want: field.ErrorList{notSupportedErr("sidecar.imagePullPolicy", "Sometimes", `"Sometimes" is not one of Always, IfNotPresent, Never`)}},
		{in: "sidecar: {resources: {requests: {memory: 1Gi, cpu: 2}, limits: {memory: 64Mi, cpu: 1}}}", want: field.ErrorList{
			field.Invalid(p("sidecar", "resources", "requests", "cpu"), "2", `2 is above the limit 1`),
			field.Invalid(p("sidecar", "resources", "requests", "memory"), "1Gi", `1Gi is above the limit 64Mi`),
		}},
		{in: "- a list", plain: `cannot unmarshal`},
		{in: "upload: {compresion: gzip}", want: field.ErrorList{field.Forbidden(p("upload.compresion"), unknownKey)}},
		{in: "upload: {compression: brotli}", want: field.ErrorList{field.Invalid(p("upload", "compression"), "brotli", `"brotli" is not one of gzip, zstd, none`)}},
		{in: "upload: {keyTemplate: \"{namespace}/{nope}\"}", want: field.ErrorList{field.Invalid(p("upload", "keyTemplate"), "{namespace}/{nope}", `key template "{namespace}/{nope}": unknown placeholder {nope}; known: {namespace}, {workload}, {pod}, {container}, {node}, {reason}, {file}, {time}, {date}`)}},
		{in: "upload: {keyTemplate: \"a b/{file}\"}", want: field.ErrorList{field.Invalid(p("upload", "keyTemplate"), "a b/{file}", `key template "a b/{file}": character ' ' is not allowed outside placeholders (use letters, digits, . _ - and /)`)}},
		{in: "upload: {quietPeriod: \"2\"}", want: field.ErrorList{field.Invalid(p("upload", "quietPeriod"), "2", `"2" is not a positive duration such as 25s or 2m`)}},
		{in: "upload: {quietPeriod: 2}", plain: `upload.quietPeriod of type string`},
		{in: "upload: {quietPeriod: 0s}", want: field.ErrorList{field.Invalid(p("upload", "quietPeriod"), "0s", `"0s" is not a positive duration such as 25s or 2m`)}},
		{in: "upload: {drainTimeout: soon}", want: field.ErrorList{field.Invalid(p("upload", "drainTimeout"), "soon", `"soon" is not a positive duration such as 25s or 2m`)}},
		{in: "upload: {metricsPort: 70000}", want: field.ErrorList{field.Invalid(p("upload", "metricsPort"), int32(70000), `70000 is not a port number (1..65535)`)}},
		{in: "upload: {metricsPort: -1}", want: field.ErrorList{field.Invalid(p("upload", "metricsPort"), int32(-1), `-1 is not a port number (1..65535)`)}},
		{in: "upload: {metricsPort: http}", plain: `upload.metricsPort of type int32`},
		// Every problem at once, unknown keys included, in the order of the keys.
		{in: "destination: gs://b\nprestop: always\npreStop: sometimes\nmountPath: rel\nexcludedNamespaces: [A, b, C]\nsidecar: {imagePullPolicy: Maybe}\nupload: {compression: lz4, metricsPort: 0, drainTimeout: 0s}\n",
			want: field.ErrorList{
				field.Forbidden(p("prestop"), unknownKey),
				field.Invalid(p("destination"), field.OmitValueType{}, `unsupported scheme "gs"; want s3://bucket/prefix or file:///path`),
				field.Invalid(p("mountPath"), "rel", `"rel" must be a clean absolute path other than /, without spaces or colons`),
				notSupportedErr("preStop", "sometimes", `"sometimes" is not one of always, on-pressure, never`),
				field.Invalid(p("excludedNamespaces").Index(0), "A", `"A" is not a namespace name: `+dns1123Label),
				field.Invalid(p("excludedNamespaces").Index(2), "C", `"C" is not a namespace name: `+dns1123Label),
				notSupportedErr("sidecar.imagePullPolicy", "Maybe", `"Maybe" is not one of Always, IfNotPresent, Never`),
				field.Invalid(p("upload", "compression"), "lz4", `"lz4" is not one of gzip, zstd, none`),
				field.Invalid(p("upload", "drainTimeout"), "0s", `"0s" is not a positive duration such as 25s or 2m`),
			}},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.in), "v1")
		var ie *InvalidError
		switch {
		case tt.plain != "":
			if err == nil || errors.As(err, &ie) || !strings.Contains(err.Error(), tt.plain) {
				t.Errorf("Parse(%q) error = %v, want a decoding error containing %q", tt.in, err, tt.plain)
			}
		case !errors.As(err, &ie):
			t.Errorf("Parse(%q) error = %v, want an *InvalidError", tt.in, err)
		default:
			if diff := cmp.Diff(tt.want, ie.Errs); diff != "" {
				t.Errorf("Parse(%q) errors (-want +got):\n%s", tt.in, diff)
			}
		}
	}
}

const (
	unknownKey   = "unknown field: the configuration has no such key"
	dns1123Label = `a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`
)

func notSupportedErr(path, value, detail string) *field.Error {
	return &field.Error{Type: field.ErrorTypeNotSupported, Field: path, BadValue: value, Detail: detail}
}

// TestInvalidErrorLines: one line per problem, the key's path first, and
// the file on every line when there is one.
func TestInvalidErrorLines(t *testing.T) {
	in := "preStop: sometimes\nupload: {compression: lz4}\n"
	_, err := Parse([]byte(in), "v1")
	want := `preStop: "sometimes" is not one of always, on-pressure, never` + "\n" +
		`upload.compression: "lz4" is not one of gzip, zstd, none`
	if err == nil || err.Error() != want {
		t.Errorf("Parse error:\n%v\nwant:\n%s", err, want)
	}
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(file, "v1")
	want = "config " + file + `: preStop: "sometimes" is not one of always, on-pressure, never` + "\n" +
		"config " + file + `: upload.compression: "lz4" is not one of gzip, zstd, none`
	if err == nil || err.Error() != want {
		t.Errorf("Load error:\n%v\nwant:\n%s", err, want)
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
