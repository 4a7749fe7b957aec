package server

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/internal/fielderr"
)

// Config is the file given with --config.
//
//	destinations:            # the first is the default destination
//	- name: default          # DNS label, unique; shown in Dump.destination
//	  url: s3://dumps/prod?endpoint=https://minio.example:9000&path-style=true
//	  credentialsDir: /var/run/dumpcatcher/store   # s3: a mounted Secret (read access is enough)
//	  caFile: /var/run/dumpcatcher/ca/ca.crt        # s3 over https with a private CA
//	- name: nas
//	  url: file:///mnt/dumps
//	presign:
//	  enabled: true          # default true; false: dumps/presign answers 405
//	  expiry: 10m            # 1s to 168h, default 10m
type Config struct {
	Destinations []DestinationConfig `json:"destinations"`
	Presign      PresignConfig       `json:"presign"`
}

// DestinationConfig is one store the API lists.
type DestinationConfig struct {
	Name           string `json:"name"`
	URL            string `json:"url"`
	CredentialsDir string `json:"credentialsDir,omitempty"`
	CAFile         string `json:"caFile,omitempty"`
}

// PresignConfig configures dumps/presign.
type PresignConfig struct {
	Enabled *bool           `json:"enabled,omitempty"`
	Expiry  metav1.Duration `json:"expiry,omitempty"`
}

// Defaults of PresignConfig.
const (
	DefaultPresignExpiry = 10 * time.Minute
	maxPresignExpiry     = 7 * 24 * time.Hour // the S3 limit
)

// PresignExpiry is the validity of presigned URLs, 0 when turned off.
func (c Config) PresignExpiry() time.Duration {
	if c.Presign.Enabled != nil && !*c.Presign.Enabled {
		return 0
	}
	if c.Presign.Expiry.Duration == 0 {
		return DefaultPresignExpiry
	}
	return c.Presign.Expiry.Duration
}

// InvalidError is every problem of a configuration, one a line naming its
// key (and the file, when read from one).
type InvalidError = fielderr.FileError

// LoadConfig reads and validates the file.
func LoadConfig(file string) (Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return Config{}, fmt.Errorf("reading config (--config): %w", err)
	}
	c, err := ParseConfig(data)
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

// ParseConfig decodes YAML strictly (unknown keys are errors naming them)
// and validates the result; every problem is in one *InvalidError.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	var errs field.ErrorList
	if len(bytes.TrimSpace(data)) > 0 {
		j, err := yaml.YAMLToJSON(data)
		if err != nil {
			return Config{}, err
		}
		strict, err := sigsjson.UnmarshalStrict(j, &c, sigsjson.DisallowUnknownFields)
		if err != nil {
			return Config{}, err
		}
		for _, e := range strict {
			var fp interface{ FieldPath() string }
			if errors.As(e, &fp) {
				errs = append(errs, field.Forbidden(field.NewPath(fp.FieldPath()), "unknown field: the configuration has no such key"))
			} else {
				errs = append(errs, field.Invalid(field.NewPath("<file>"), field.OmitValueType{}, e.Error()))
			}
		}
	}
	errs = append(errs, c.Validate()...)
	if len(errs) > 0 {
		return Config{}, &InvalidError{Errs: errs}
	}
	return c, nil
}

// Validate returns every problem of c. URLs are never repeated (they may
// hold credentials).
func (c Config) Validate() field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("destinations")
	if len(c.Destinations) == 0 {
		errs = append(errs, field.Required(p, "at least one destination: the uploader's default destination first, e.g. {name: default, url: s3://bucket/prefix}"))
	}
	seen := map[string]bool{}
	for i, d := range c.Destinations {
		pi := p.Index(i)
		switch {
		case d.Name == "":
			errs = append(errs, field.Required(pi.Child("name"), "a name for the destination (a DNS label such as default)"))
		case len(validation.IsDNS1123Label(d.Name)) > 0:
			errs = append(errs, field.Invalid(pi.Child("name"), d.Name, fmt.Sprintf("%q is not a DNS label: lower-case letters, digits and '-'", d.Name)))
		case seen[d.Name]:
			errs = append(errs, field.Invalid(pi.Child("name"), d.Name, fmt.Sprintf("%q is the name of an earlier destination: names must be unique", d.Name)))
		}
		seen[d.Name] = true
		dest, err := contract.ParseDestination(d.URL)
		if err != nil {
			errs = append(errs, field.Invalid(pi.Child("url"), field.OmitValueType{}, err.Error()))
			continue
		}
		if dest.Scheme != "s3" {
			if d.CredentialsDir != "" {
				errs = append(errs, field.Forbidden(pi.Child("credentialsDir"), "only s3:// destinations have credentials"))
			}
			if d.CAFile != "" {
				errs = append(errs, field.Forbidden(pi.Child("caFile"), "only s3:// destinations over https have a CA"))
			}
		}
	}
	if e := c.Presign.Expiry.Duration; e < 0 || e > maxPresignExpiry || e > 0 && e < time.Second {
		errs = append(errs, field.Invalid(field.NewPath("presign", "expiry"), e.String(), "want 1s to 168h (the S3 limit), e.g. 10m"))
	}
	return errs
}
