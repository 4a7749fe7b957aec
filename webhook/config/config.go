// Package config is the webhook's configuration file: its schema, its
// defaults and its validation. Every key has a default, so the webhook also
// runs without a file.
package config

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
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
// the schema does not know is an error that names it.
func Load(file, version string) (Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return Config{}, fmt.Errorf("reading config: %w", err)
	}
	c, err := Parse(data, version)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", file, err)
	}
	return c, nil
}

// Parse decodes YAML over the defaults and validates the result.
func Parse(data []byte, version string) (Config, error) {
	c := Default(version)
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
		if len(strict) > 0 {
			return Config{}, strict[0] // e.g. unknown field "sidecar.imag"
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks every field and names the first bad one.
func (c Config) Validate() error {
	if c.Destination != "" {
		if _, err := contract.ParseDestination(c.Destination); err != nil {
			return fmt.Errorf("destination: %v", err)
		}
	}
	if c.CredentialsSecret != "" {
		if errs := validation.IsDNS1123Subdomain(c.CredentialsSecret); len(errs) > 0 {
			return fmt.Errorf("credentialsSecret: %q is not a valid Secret name: %s", c.CredentialsSecret, strings.Join(errs, "; "))
		}
	}
	if !path.IsAbs(c.MountPath) || path.Clean(c.MountPath) != c.MountPath || c.MountPath == "/" || strings.ContainsAny(c.MountPath, " :") {
		return fmt.Errorf("mountPath: %q must be a clean absolute path other than /, without spaces or colons", c.MountPath)
	}
	if c.SizeLimit != "" {
		if err := ValidateSizeLimit(c.SizeLimit); err != nil {
			return fmt.Errorf("sizeLimit: %v", err)
		}
	}
	if !slices.Contains(contract.Policies(), c.PreStop) {
		return fmt.Errorf("preStop: %q is not one of %s", c.PreStop, strings.Join(contract.Policies(), ", "))
	}
	if c.MinTerminationGracePeriodSeconds < 0 || c.MinTerminationGracePeriodSeconds > 3600 {
		return fmt.Errorf("minTerminationGracePeriodSeconds: %d is outside 0..3600", c.MinTerminationGracePeriodSeconds)
	}
	if !slices.Contains([]string{NativeAuto, NativeAlways, NativeNever}, c.NativeSidecar) {
		return fmt.Errorf("nativeSidecar: %q is not one of auto, always, never", c.NativeSidecar)
	}
	for i, ns := range c.ExcludedNamespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return fmt.Errorf("excludedNamespaces[%d]: %q is not a namespace name: %s", i, ns, strings.Join(errs, "; "))
		}
	}
	if strings.TrimSpace(c.Sidecar.Image) == "" || strings.ContainsAny(c.Sidecar.Image, " \t") {
		return fmt.Errorf("sidecar.image: %q is not an image reference", c.Sidecar.Image)
	}
	switch c.Sidecar.ImagePullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return fmt.Errorf("sidecar.imagePullPolicy: %q is not one of Always, IfNotPresent, Never", c.Sidecar.ImagePullPolicy)
	}
	for name, q := range c.Sidecar.Resources.Requests {
		if lim, ok := c.Sidecar.Resources.Limits[name]; ok && q.Cmp(lim) > 0 {
			return fmt.Errorf("sidecar.resources.requests.%s: %s is above the limit %s", name, q.String(), lim.String())
		}
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
