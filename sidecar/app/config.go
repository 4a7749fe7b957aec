package app

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/internal/fielderr"
	"github.com/dumpcatcher/dumpcatcher/sidecar/objectkey"
	"github.com/dumpcatcher/dumpcatcher/sidecar/uploader"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Config is the uploader's validated configuration. Field paths in its
// errors are the names of the flags that set the fields.
type Config struct {
	// Dir is the shared volume (absolute).
	Dir string
	// Destination is where dumps go.
	Destination contract.Destination
	// CredentialsDir holds the mounted credentials Secret (empty: the AWS
	// default chain).
	CredentialsDir string
	// CAFile is a PEM bundle to trust for an https endpoint (may be empty).
	CAFile string
	// KeyTemplate makes the object keys (see objectkey.Parse).
	KeyTemplate string
	// Compression is one of uploader.Compressions().
	Compression string
	// MetricsAddress serves Prometheus metrics when set, e.g. :9090.
	MetricsAddress string
	// Drain is how long uploads go on after the context is cancelled;
	// QuietPeriod how long a half-written file must stay unchanged before
	// it is uploaded as incomplete.
	Drain, QuietPeriod time.Duration
	// Containers are the target containers, whose dump directories are
	// made at start.
	Containers []string
	// GracePeriodSeconds is the pod's termination grace period as the
	// webhook left it (0: unknown); it caps the dump lock a preStop hook
	// may take (dumplock.MaxTTL).
	GracePeriodSeconds int64
	// Identity is the pod's.
	Identity uploader.Identity
	// LogLevel is for the caller, which makes the logger Run is given:
	// debug (logr's V(1)), info (V(0)) or error.
	LogLevel zapcore.Level
	// Version is the binary's, for the log.
	Version string
}

// Validate returns every problem of c, each with its field path.
func (c Config) Validate() field.ErrorList {
	var errs field.ErrorList
	if !filepath.IsAbs(c.Dir) {
		errs = append(errs, field.Invalid(field.NewPath("dir"), c.Dir, fmt.Sprintf("%q is not an absolute path", c.Dir)))
	}
	if c.Destination.Scheme == "" {
		errs = append(errs, field.Required(field.NewPath("destination"), destinationRequired))
	}
	if _, err := objectkey.Parse(c.KeyTemplate); err != nil {
		errs = append(errs, field.Invalid(field.NewPath("key-template"), c.KeyTemplate, err.Error()))
	}
	if !slices.Contains(uploader.Compressions(), c.Compression) {
		errs = append(errs, field.NotSupported(field.NewPath("compression"), c.Compression, uploader.Compressions()))
		errs[len(errs)-1].Detail = fmt.Sprintf("%q is not one of %s", c.Compression, strings.Join(uploader.Compressions(), ", "))
	}
	if c.Drain <= 0 {
		errs = append(errs, field.Invalid(field.NewPath("drain-timeout"), c.Drain.String(), fmt.Sprintf("%s is not a positive duration such as 25s", c.Drain)))
	}
	if c.QuietPeriod <= 0 {
		errs = append(errs, field.Invalid(field.NewPath("quiet-period"), c.QuietPeriod.String(), fmt.Sprintf("%s is not a positive duration such as 2m", c.QuietPeriod)))
	}
	if c.CAFile != "" {
		if _, err := os.Stat(c.CAFile); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("ca-file"), c.CAFile, err.Error()))
		}
	}
	if c.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddress); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("metrics-address"), c.MetricsAddress, err.Error()))
		}
	}
	for i, n := range c.Containers {
		if n == "" || strings.ContainsAny(n, "/\\,") || n == "." || n == ".." {
			errs = append(errs, field.Invalid(field.NewPath("containers").Index(i), n, fmt.Sprintf("%q is not a container name", n)))
		}
	}
	return errs
}

const destinationRequired = "required: where dumps go, e.g. s3://heap-dumps/prod?region=eu-west-1"

// Flags are the uploader's settings as its flags, or the environment
// variables they fall back to (the webhook sets those), give them.
type Flags struct {
	Dir, Destination, CredentialsDir, CAFile, KeyTemplate, Compression string
	MetricsAddress, DrainTimeout, QuietPeriod, Containers, LogLevel    string
	GracePeriod                                                        string
	Identity                                                           uploader.Identity
}

// binding is one flag: its name, environment variable, default and help.
type binding struct {
	name, env, def, help string
	value                func(*Flags) *string
}

var bindings = []binding{
	{"dir", contract.EnvDir, contract.SidecarDir, "the shared volume", func(f *Flags) *string { return &f.Dir }},
	{"destination", contract.EnvDestination, "", "storage URL: s3://bucket/prefix?endpoint=...&region=...&path-style=true or file:///path (required)", func(f *Flags) *string { return &f.Destination }},
	{"credentials-dir", contract.EnvCredentialsDir, "", "directory of the mounted credentials Secret (empty: the AWS default chain)", func(f *Flags) *string { return &f.CredentialsDir }},
	{"ca-file", contract.EnvCAFile, "", "PEM bundle to trust for an https endpoint", func(f *Flags) *string { return &f.CAFile }},
	{"key-template", contract.EnvKeyTemplate, objectkey.Default, "object key template", func(f *Flags) *string { return &f.KeyTemplate }},
	{"compression", contract.EnvCompression, uploader.CompressionGzip, "gzip, zstd or none (gzip files are sent as they are)", func(f *Flags) *string { return &f.Compression }},
	{"metrics-address", contract.EnvMetricsAddress, "", "serve Prometheus metrics on this address, e.g. :9090 (empty: off)", func(f *Flags) *string { return &f.MetricsAddress }},
	{"drain-timeout", contract.EnvDrainTimeout, contract.DefaultDrainTimeout.String(), "how long uploads go on after SIGTERM", func(f *Flags) *string { return &f.DrainTimeout }},
	{"quiet-period", contract.EnvQuietPeriod, contract.DefaultQuietPeriod.String(), "how long a half-written file must stay unchanged before it is uploaded as incomplete", func(f *Flags) *string { return &f.QuietPeriod }},
	{"containers", contract.EnvContainers, "", "target containers, comma-separated (their dump directories are created at start)", func(f *Flags) *string { return &f.Containers }},
	{"pod-namespace", contract.EnvPodNamespace, "", "the pod's namespace", func(f *Flags) *string { return &f.Identity.Namespace }},
	{"pod-name", contract.EnvPodName, "", "the pod's name", func(f *Flags) *string { return &f.Identity.Pod }},
	{"pod-uid", contract.EnvPodUID, "", "the pod's UID", func(f *Flags) *string { return &f.Identity.PodUID }},
	{"node-name", contract.EnvNodeName, "", "the node's name", func(f *Flags) *string { return &f.Identity.Node }},
	{"workload", contract.EnvWorkload, "", "the pod's workload, kind/name", func(f *Flags) *string { return &f.Identity.Workload }},
	{"grace-period", contract.EnvGracePeriod, "", "the pod's termination grace period in seconds (set by the webhook); caps the dump lock of a preStop hook (empty: 1h)", func(f *Flags) *string { return &f.GracePeriod }},
	{"log-level", contract.EnvLogLevel, "info", "debug, info or error (warn is taken as info)", func(f *Flags) *string { return &f.LogLevel }},
}

// Bind defines the flags on fs. Each defaults to its environment variable
// (read with getenv), or to the built-in default when that is empty.
func (f *Flags) Bind(fs *flag.FlagSet, getenv func(string) string) {
	for _, b := range bindings {
		def := b.def
		if v := getenv(b.env); v != "" {
			def = v
		}
		fs.StringVar(b.value(f), b.name, def, b.help+" ($"+b.env+")")
	}
}

// Config parses and validates the settings: the one place they are
// checked. The error, an *InvalidError, names every problem.
func (f Flags) Config() (Config, error) {
	var errs field.ErrorList
	c := Config{
		Dir: f.Dir, CredentialsDir: f.CredentialsDir, CAFile: f.CAFile, KeyTemplate: f.KeyTemplate,
		Compression: f.Compression, MetricsAddress: f.MetricsAddress, Identity: f.Identity,
	}
	var err error
	if f.Destination == "" {
		errs = append(errs, field.Required(field.NewPath("destination"), destinationRequired))
	} else if c.Destination, err = contract.ParseDestination(f.Destination); err != nil {
		errs = append(errs, field.Invalid(field.NewPath("destination"), "", err.Error())) // the URL may hold a secret: never echoed
	}
	duration := func(name, s string) time.Duration {
		d, err := contract.ParsePositiveDuration(s)
		if err != nil {
			errs = append(errs, field.Invalid(field.NewPath(name), s, err.Error()))
		}
		return d
	}
	c.Drain = duration("drain-timeout", f.DrainTimeout)
	c.QuietPeriod = duration("quiet-period", f.QuietPeriod)
	if f.GracePeriod != "" {
		g, err := strconv.ParseInt(f.GracePeriod, 10, 64)
		if err != nil || g < 0 {
			errs = append(errs, field.Invalid(field.NewPath("grace-period"), f.GracePeriod, fmt.Sprintf("%q is not a whole number of seconds, 0 or more", f.GracePeriod)))
		}
		c.GracePeriodSeconds = g
	}
	for _, n := range strings.Split(f.Containers, ",") {
		if n = strings.TrimSpace(n); n != "" {
			c.Containers = append(c.Containers, n)
		}
	}
	if err := c.LogLevel.Set(f.LogLevel); err != nil {
		errs = append(errs, field.Invalid(field.NewPath("log-level"), f.LogLevel, err.Error()))
	} else if c.LogLevel == zapcore.WarnLevel {
		// logr has no warn level: what zap logged as warnings is info now,
		// and warn keeps showing them.
		c.LogLevel = zapcore.InfoLevel
	}
	// The checks of the parsed values, for the fields that did parse.
	failed := map[string]bool{}
	for _, e := range errs {
		failed[root(e.Field)] = true
	}
	for _, e := range c.Validate() {
		if !failed[root(e.Field)] {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return c, &InvalidError{Errs: errs}
	}
	return c, nil
}

// InvalidError is every problem of a configuration.
type InvalidError struct {
	Errs field.ErrorList
}

// Error names each problem's flag and environment variable, one a line.
func (e *InvalidError) Error() string {
	return fielderr.Lines(e.Errs, func(fe *field.Error) string {
		name := root(fe.Field)
		where := "--" + name
		for _, b := range bindings {
			if b.name == name {
				where += " ($" + b.env + ")"
			}
		}
		return where
	})
}

// root is the first element of a field path: the flag's name.
func root(path string) string {
	if i := strings.IndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return path
}
