// Package config is the webhook's configuration file: its schema, its
// defaults and its validation. Every key has a default, so the webhook also
// runs without a file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/internal/fielderr"
	"github.com/dumpcatcher/dumpcatcher/sidecar/objectkey"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Native sidecar modes.
const (
	NativeAuto   = "auto"
	NativeAlways = "always"
	NativeNever  = "never"
)

// DefaultImageRepository is the uploader sidecar image without its tag.
const DefaultImageRepository = "ghcr.io/dumpcatcher/dumpcatcher"

// Config is the webhook configuration file. Field comments are the reference
// documentation; README.md repeats them.
type Config struct {
	// Destination is the default storage URL for dumps (s3://bucket/prefix?...
	// or file:///path). Pods override it with dumpcatcher.io/destination.
	// Empty: pods without the annotation are not injected (with a warning).
	Destination string `json:"destination"`
	// CredentialsSecret names the Secret, in the pod's namespace, that holds
	// storage credentials; it is mounted into the sidecar as an optional
	// volume, so a missing Secret never keeps the pod from starting. Empty:
	// the uploader uses the default credential chain (e.g. IRSA). Pods
	// override it with dumpcatcher.io/secret.
	CredentialsSecret string `json:"credentialsSecret"`
	// MountPath is where the shared volume appears in app containers.
	MountPath string `json:"mountPath"`
	// SizeLimit is the emptyDir size limit, a quantity such as 4Gi. Empty: no
	// limit. A dump larger than the limit gets the pod evicted, so set it above
	// the largest heap. Pods override it with dumpcatcher.io/size-limit.
	SizeLimit string `json:"sizeLimit"`
	// PreStop is the default preStop dump policy: always, on-pressure or never.
	// Pods override it with dumpcatcher.io/prestop.
	PreStop string `json:"preStop"`
	// MinTerminationGracePeriodSeconds is raised into pods whose grace period
	// is lower, so that the preStop dump has time to finish. 0 leaves pods as
	// they are.
	MinTerminationGracePeriodSeconds int64 `json:"minTerminationGracePeriodSeconds"`
	// NativeSidecar: auto (native sidecar when the API server is 1.29 or
	// newer), always, or never (a regular container).
	NativeSidecar string `json:"nativeSidecar"`
	// ExcludedNamespaces are never injected, in addition to kube-system and
	// the webhook's own namespace.
	ExcludedNamespaces []string `json:"excludedNamespaces"`
	// Sidecar configures the injected uploader container.
	Sidecar Sidecar `json:"sidecar"`
	// Upload configures the uploader process in that container. Empty
	// values (and values equal to the uploader's defaults) are not injected.
	Upload Upload `json:"upload"`
}

// Upload configures the uploader in the sidecar; each key becomes one of
// its environment variables.
type Upload struct {
	// Compression of uploaded dumps: gzip, zstd or none. Empty: gzip. Pods
	// override it with dumpcatcher.io/compression.
	Compression string `json:"compression"`
	// KeyTemplate is the object key of a dump under the destination's
	// prefix, with the placeholders of sidecar/objectkey. Empty:
	// {namespace}/{workload}/{pod}/{container}/{time}-{reason}-{file}.
	KeyTemplate string `json:"keyTemplate"`
	// QuietPeriod is how long a half-written file must stay unchanged before
	// it is uploaded as incomplete, a Go duration. Empty: 2m.
	QuietPeriod string `json:"quietPeriod"`
	// DrainTimeout bounds the uploads that go on after SIGTERM, a Go
	// duration. Empty: 25s.
	DrainTimeout string `json:"drainTimeout"`
	// MetricsPort serves the uploader's Prometheus metrics on this port of
	// the pod (a container port named dc-metrics). 0: no metrics. Pods
	// override it with dumpcatcher.io/metrics-port.
	MetricsPort int32 `json:"metricsPort"`
}

// Sidecar configures the uploader container.
type Sidecar struct {
	// Image of the uploader. Default: ghcr.io/dumpcatcher/dumpcatcher:<webhook version>.
	Image string `json:"image"`
	// ImagePullPolicy: Always, IfNotPresent or Never.
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy"`
	// Resources of the uploader container.
	Resources corev1.ResourceRequirements `json:"resources"`
}

// Default returns the configuration used for keys a file leaves out.
// version is the webhook's own version; it tags the default sidecar image.
func Default(version string) Config {
	return Config{
		MountPath:                        "/dumpcatcher",
		PreStop:                          contract.PolicyOnPressure,
		MinTerminationGracePeriodSeconds: 60,
		NativeSidecar:                    NativeAuto,
		ExcludedNamespaces:               []string{},
		Sidecar: Sidecar{
			Image:           DefaultImageRepository + ":" + imageTag(version),
			ImagePullPolicy: corev1.PullIfNotPresent,
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse("10m"),
					corev1.ResourceMemory: resource.MustParse("32Mi"),
				},
				Limits: corev1.ResourceList{
					corev1.ResourceMemory: resource.MustParse("128Mi"),
				},
			},
		},
	}
}

func imageTag(version string) string {
	if version == "" {
		return "dev"
	}
	return version
}

// Load reads a YAML file over the defaults and validates the result. A key
// the schema does not know is an error that names it. The problems of the
// file are an *InvalidError naming the file on every line.
func Load(file, version string) (Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return Config{}, fmt.Errorf("reading config: %w", err)
	}
	c, err := Parse(data, version)
	var ie *InvalidError
	switch {
	case errors.As(err, &ie):
		ie.File = file
		return Config{}, ie
	case err != nil:
		return Config{}, fmt.Errorf("config %s: %w", file, err)
	}
	return c, nil
}

// Parse decodes YAML over the defaults and validates the result. Keys the
// schema does not know, keys given twice and invalid values are an
// *InvalidError with every one of them; YAML that does not decode into the
// schema at all is a plain error.
func Parse(data []byte, version string) (Config, error) {
	c := Default(version)
	var errs field.ErrorList
	if len(bytes.TrimSpace(data)) > 0 {
		// Sidecar resources given in the file replace the defaults whole.
		var probe struct {
			Sidecar struct {
				Resources *corev1.ResourceRequirements `json:"resources"`
			} `json:"sidecar"`
		}
		if err := yaml.Unmarshal(data, &probe); err == nil && probe.Sidecar.Resources != nil {
			c.Sidecar.Resources = corev1.ResourceRequirements{}
		}
		j, err := yaml.YAMLToJSON(data)
		if err != nil {
			return Config{}, err
		}
		strict, err := sigsjson.UnmarshalStrict(j, &c, sigsjson.DisallowUnknownFields)
		if err != nil {
			return Config{}, err
		}
		// The rest of the file decoded: its values are checked too.
		for _, e := range strict {
			errs = append(errs, strictError(e))
		}
	}
	errs = append(errs, c.Validate()...)
	if len(errs) > 0 {
		return Config{}, &InvalidError{Errs: errs}
	}
	return c, nil
}

// strictError is a key the schema does not know (sigs.k8s.io/json's strict
// errors carry its path) as a field error.
func strictError(err error) *field.Error {
	var fp interface{ FieldPath() string }
	if !errors.As(err, &fp) {
		return field.Invalid(field.NewPath("<file>"), field.OmitValueType{}, err.Error())
	}
	return field.Forbidden(field.NewPath(fp.FieldPath()), "unknown field: the configuration has no such key")
}

// InvalidError is every problem of a configuration, one a line naming its
// key (and the file, when read from one).
type InvalidError = fielderr.FileError

// Validate returns every problem of c, each with its key's path. The
// destination's errors never repeat the URL, which may hold credentials.
func (c Config) Validate() field.ErrorList {
	var errs field.ErrorList
	if c.Destination != "" {
		if _, err := contract.ParseDestination(c.Destination); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("destination"), field.OmitValueType{}, err.Error()))
		}
	}
	if c.CredentialsSecret != "" {
		if msgs := validation.IsDNS1123Subdomain(c.CredentialsSecret); len(msgs) > 0 {
			errs = append(errs, field.Invalid(field.NewPath("credentialsSecret"), c.CredentialsSecret,
				fmt.Sprintf("%q is not a valid Secret name: %s", c.CredentialsSecret, strings.Join(msgs, "; "))))
		}
	}
	if !path.IsAbs(c.MountPath) || path.Clean(c.MountPath) != c.MountPath || c.MountPath == "/" || strings.ContainsAny(c.MountPath, " :") {
		errs = append(errs, field.Invalid(field.NewPath("mountPath"), c.MountPath,
			fmt.Sprintf("%q must be a clean absolute path other than /, without spaces or colons", c.MountPath)))
	}
	if c.SizeLimit != "" {
		if err := ValidateSizeLimit(c.SizeLimit); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("sizeLimit"), c.SizeLimit, err.Error()))
		}
	}
	if !slices.Contains(contract.Policies(), c.PreStop) {
		errs = append(errs, notSupported(field.NewPath("preStop"), c.PreStop, contract.Policies()))
	}
	if c.MinTerminationGracePeriodSeconds < 0 || c.MinTerminationGracePeriodSeconds > 3600 {
		errs = append(errs, field.Invalid(field.NewPath("minTerminationGracePeriodSeconds"), c.MinTerminationGracePeriodSeconds,
			fmt.Sprintf("%d is outside 0..3600", c.MinTerminationGracePeriodSeconds)))
	}
	if !slices.Contains([]string{NativeAuto, NativeAlways, NativeNever}, c.NativeSidecar) {
		errs = append(errs, notSupported(field.NewPath("nativeSidecar"), c.NativeSidecar, []string{NativeAuto, NativeAlways, NativeNever}))
	}
	for i, ns := range c.ExcludedNamespaces {
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			errs = append(errs, field.Invalid(field.NewPath("excludedNamespaces").Index(i), ns,
				fmt.Sprintf("%q is not a namespace name: %s", ns, strings.Join(msgs, "; "))))
		}
	}
	sidecar := field.NewPath("sidecar")
	if strings.TrimSpace(c.Sidecar.Image) == "" || strings.ContainsAny(c.Sidecar.Image, " \t") {
		errs = append(errs, field.Invalid(sidecar.Child("image"), c.Sidecar.Image, fmt.Sprintf("%q is not an image reference", c.Sidecar.Image)))
	}
	switch c.Sidecar.ImagePullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		errs = append(errs, notSupported(sidecar.Child("imagePullPolicy"), string(c.Sidecar.ImagePullPolicy), []string{string(corev1.PullAlways), string(corev1.PullIfNotPresent), string(corev1.PullNever)}))
	}
	for _, name := range slices.Sorted(maps.Keys(c.Sidecar.Resources.Requests)) {
		q := c.Sidecar.Resources.Requests[name]
		if lim, ok := c.Sidecar.Resources.Limits[name]; ok && q.Cmp(lim) > 0 {
			errs = append(errs, field.Invalid(sidecar.Child("resources", "requests", string(name)), q.String(),
				fmt.Sprintf("%s is above the limit %s", q.String(), lim.String())))
		}
	}
	return append(errs, c.Upload.validate(field.NewPath("upload"))...)
}

// notSupported is a value not among valid, said as "%q is not one of a, b, c".
func notSupported(p *field.Path, value string, valid []string) *field.Error {
	e := field.NotSupported(p, value, valid)
	e.Detail = fmt.Sprintf("%q is not one of %s", value, strings.Join(valid, ", "))
	return e
}

func (u Upload) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if u.Compression != "" {
		if err := ValidateCompression(u.Compression); err != nil {
			errs = append(errs, field.Invalid(p.Child("compression"), u.Compression, err.Error()))
		}
	}
	if u.KeyTemplate != "" {
		if _, err := objectkey.Parse(u.KeyTemplate); err != nil {
			errs = append(errs, field.Invalid(p.Child("keyTemplate"), u.KeyTemplate, err.Error()))
		}
	}
	if u.QuietPeriod != "" {
		if _, err := contract.ParsePositiveDuration(u.QuietPeriod); err != nil {
			errs = append(errs, field.Invalid(p.Child("quietPeriod"), u.QuietPeriod, err.Error()))
		}
	}
	if u.DrainTimeout != "" {
		if _, err := contract.ParsePositiveDuration(u.DrainTimeout); err != nil {
			errs = append(errs, field.Invalid(p.Child("drainTimeout"), u.DrainTimeout, err.Error()))
		}
	}
	if u.MetricsPort != 0 {
		if err := ValidatePort(u.MetricsPort); err != nil {
			errs = append(errs, field.Invalid(p.Child("metricsPort"), u.MetricsPort, err.Error()))
		}
	}
	return errs
}

// Changed returns the settings that differ from the uploader's own defaults
// (the others zero): only those are injected into the sidecar, so that pods
// stay as they are while the configuration only spells out the defaults.
// u must be valid.
func (u Upload) Changed() Upload {
	if u.Compression == contract.DefaultCompression {
		u.Compression = ""
	}
	if u.KeyTemplate == objectkey.Default {
		u.KeyTemplate = ""
	}
	if d, err := contract.ParsePositiveDuration(u.QuietPeriod); err == nil && d == contract.DefaultQuietPeriod {
		u.QuietPeriod = ""
	}
	if d, err := contract.ParsePositiveDuration(u.DrainTimeout); err == nil && d == contract.DefaultDrainTimeout {
		u.DrainTimeout = ""
	}
	return u
}

// ValidateCompression checks a compression mode of the uploader.
func ValidateCompression(s string) error {
	if !slices.Contains(contract.Compressions(), s) {
		return fmt.Errorf("%q is not one of %s", s, strings.Join(contract.Compressions(), ", "))
	}
	return nil
}

// ValidatePort checks a TCP port number for the uploader's metrics.
func ValidatePort(p int32) error {
	if errs := validation.IsValidPortNum(int(p)); len(errs) > 0 {
		return fmt.Errorf("%d is not a port number (1..65535)", p)
	}
	return nil
}

// ValidateSizeLimit checks an emptyDir size limit quantity.
func ValidateSizeLimit(s string) error {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return fmt.Errorf("%q is not a quantity such as 4Gi", s)
	}
	if q.Sign() <= 0 {
		return fmt.Errorf("%q must be greater than zero", s)
	}
	return nil
}
