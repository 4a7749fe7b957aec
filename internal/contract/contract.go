// Package contract is the one home of what ties the webhook to the
// dumpcatcher binary it injects: environment variables the uploader sidecar
// reads, the flags of `dumpcatcher dump` that the injected preStop hook
// passes, the fixed paths inside the sidecar image and the shared volume, the
// JVM options that point heap dumps at the shared volume, and the storage
// destination URLs both sides parse with the same validator.
//
// The webhook writes these names into pod specs and the sidecar reads them, so
// both import them from here: renaming one breaks the build, not production.
package contract

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// BinaryPath is where the sidecar image ships the dumpcatcher binary.
const BinaryPath = "/usr/local/bin/dumpcatcher"

// SidecarDir is where the uploader sidecar mounts the whole shared volume.
const SidecarDir = "/dumpcatcher"

// Layout of the shared volume (paths relative to its root).
const (
	// BinDir holds the dumpcatcher binary the sidecar copies in, so that the
	// preStop hook can run it inside any app image.
	BinDir = "bin"
	// BinaryName is the file name of the binary inside BinDir.
	BinaryName = "dumpcatcher"
	// LockSocketName is the Unix socket inside BinDir on which the uploader
	// takes the workload's dump lock for the dump command (see
	// sidecar/dumplock).
	LockSocketName = "dumpcatcher.sock"
	// DumpsDir holds one directory per target container: DumpsDir/<container>/.
	DumpsDir = "dumps"
)

// Environment variables of the uploader sidecar.
const (
	// EnvDir is the shared volume's mount path inside the sidecar.
	EnvDir = "DUMPCATCHER_DIR"
	// EnvDestination is the storage URL dumps are uploaded to.
	EnvDestination = "DUMPCATCHER_DESTINATION"
	// EnvCredentialsDir is the directory where the credentials Secret is
	// mounted; unset means the storage client's default credential chain.
	EnvCredentialsDir = "DUMPCATCHER_CREDENTIALS_DIR"
	// EnvPodName, EnvPodNamespace, EnvPodUID and EnvNodeName carry the pod's
	// identity through the downward API.
	EnvPodName      = "DUMPCATCHER_POD_NAME"
	EnvPodNamespace = "DUMPCATCHER_POD_NAMESPACE"
	EnvPodUID       = "DUMPCATCHER_POD_UID"
	EnvNodeName     = "DUMPCATCHER_NODE_NAME"
	// EnvWorkload names the pod's workload as kind/name, e.g. deployment/web.
	EnvWorkload = "DUMPCATCHER_WORKLOAD"
	// EnvContainers is the comma-separated list of target containers.
	EnvContainers = "DUMPCATCHER_CONTAINERS"
	// EnvCAFile is a PEM bundle to trust for an https storage endpoint.
	EnvCAFile = "DUMPCATCHER_CA_FILE"
	// EnvKeyTemplate is the object key template.
	EnvKeyTemplate = "DUMPCATCHER_KEY_TEMPLATE"
	// EnvCompression is gzip, zstd or none.
	EnvCompression = "DUMPCATCHER_COMPRESSION"
	// EnvMetricsAddress serves Prometheus metrics when set (e.g. :9090).
	EnvMetricsAddress = "DUMPCATCHER_METRICS_ADDRESS"
	// EnvDrainTimeout bounds uploads after SIGTERM (a Go duration).
	EnvDrainTimeout = "DUMPCATCHER_DRAIN_TIMEOUT"
	// EnvQuietPeriod is how long a half-written file must stay unchanged
	// before it is uploaded as incomplete (a Go duration).
	EnvQuietPeriod = "DUMPCATCHER_QUIET_PERIOD"
	// EnvLogLevel is debug, info or error (warn is taken as info).
	EnvLogLevel = "DUMPCATCHER_LOG_LEVEL"
	// EnvGracePeriod is the pod's termination grace period in seconds, as the
	// webhook left it (after raising it for the preStop dump). The uploader
	// caps the dump lock a preStop hook may take at this plus
	// dumplock.Margin (dumplock.MaxTTL); unset, at dumplock.DefaultMaxTTL.
	EnvGracePeriod = "DUMPCATCHER_GRACE_PERIOD"
)

// Compression modes of the uploader (EnvCompression).
const (
	CompressionGzip = "gzip"
	CompressionZstd = "zstd"
	CompressionNone = "none"
)

// Compressions lists the compression modes in documentation order.
func Compressions() []string { return []string{CompressionGzip, CompressionZstd, CompressionNone} }

// Defaults of the uploader's settings: the webhook injects a setting into
// the sidecar only when it differs from these.
const (
	DefaultCompression  = CompressionGzip
	DefaultDrainTimeout = 25 * time.Second
	DefaultQuietPeriod  = 2 * time.Minute
)

// ParsePositiveDuration parses a Go duration greater than zero, such as 25s
// or 2m (EnvDrainTimeout, EnvQuietPeriod).
func ParsePositiveDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration such as 25s or 2m", s)
	}
	return d, nil
}

// CredentialsMountPath is where the credentials Secret is mounted in the
// sidecar when one is configured.
const CredentialsMountPath = "/var/run/secrets/dumpcatcher/credentials"

// Subcommands of the dumpcatcher binary.
const (
	CmdUpload = "upload"
	CmdDump   = "dump"
)

// Flags of `dumpcatcher dump` that the injected preStop hook sets.
const (
	FlagReason      = "--reason"
	FlagPolicy      = "--policy"
	FlagDir         = "--dir"
	FlagContainer   = "--container"
	FlagNamespace   = "--namespace"
	FlagWorkload    = "--workload"
	FlagGracePeriod = "--grace-period"
	// FlagThen carries the container's original preStop handler as JSON
	// (a corev1.LifecycleHandler); the dump command runs it after the dump.
	FlagThen = "--then"
)

// Reasons a dump is taken for; they end up in object keys and metadata.
const (
	ReasonOOM     = "oom"
	ReasonPreStop = "prestop"
	ReasonManual  = "manual"
	// ReasonCrash: a JVM crash log (hs_err_pid<pid>.log) HotSpot wrote
	// when the JVM died of a fatal error.
	ReasonCrash = "crash"
	// ReasonCore: an ELF core file named by CoreFileName (written by the
	// node's `dumpcatcher core` handler).
	ReasonCore = "core"
	// ReasonGCPressure: a dump taken because of GC pressure (reserved).
	ReasonGCPressure = "gc-pressure"
)

// PreStop policies of `dumpcatcher dump`.
const (
	PolicyAlways     = "always"
	PolicyOnPressure = "on-pressure"
	PolicyNever      = "never"
)

// Policies lists the valid preStop policies in documentation order.
func Policies() []string { return []string{PolicyAlways, PolicyOnPressure, PolicyNever} }

// Dump file names. The JVM names its OutOfMemoryError dump java_pid<pid>.hprof
// in the HeapDumpPath directory; `dumpcatcher dump` names its dumps
// <reason>-<time>-pid<pid>.hprof and writes them under a name starting with
// "." that it renames into place when the JVM reports success. The uploader
// ignores names starting with "." and tells the reason from the name.

// TempPrefix starts the names of files still being written.
const TempPrefix = "."

// DumpFileName is the name `dumpcatcher dump` gives a finished dump.
func DumpFileName(reason string, at time.Time, pid int) string {
	return fmt.Sprintf("%s-%s-pid%d.hprof", reason, at.UTC().Format(timeLayout), pid)
}

// ShortName drops the "<reason>-<time>-" a dump of `dumpcatcher dump` starts
// with (the object key has both already); other names stay as they are.
func ShortName(name string) string {
	r := ReasonOf(name)
	if r == ReasonOOM {
		return name
	}
	rest := strings.TrimPrefix(name, r+"-")
	if i := strings.IndexByte(rest, '-'); i == len(timeLayout) {
		if _, err := time.Parse(timeLayout, rest[:i]); err == nil {
			return rest[i+1:]
		}
	}
	return name
}

// ReasonOf tells why a dump file was written from its name: dumps of
// `dumpcatcher dump` start with their reason, JVM crash logs are named
// hs_err_pid<pid>.log (CrashLogName), cores core-<time>-<executable>-<pid>.core
// (CoreFileName), anything else the JVM wrote on OutOfMemoryError. A ".gz"
// after any of these names does not change the reason.
func ReasonOf(name string) string {
	for _, r := range []string{ReasonPreStop, ReasonManual} {
		if strings.HasPrefix(name, r+"-") {
			return r
		}
	}
	base := strings.TrimSuffix(name, ".gz")
	if IsCrashLogName(base) {
		return ReasonCrash
	}
	if IsCoreFileName(base) {
		return ReasonCore
	}
	return ReasonOOM
}

// Crash log names. HotSpot expands %p in -XX:ErrorFile to the JVM's pid.
const (
	crashLogPrefix = "hs_err_pid"
	crashLogSuffix = ".log"
	// CrashLogPattern is the file name part of the injected -XX:ErrorFile.
	CrashLogPattern = crashLogPrefix + "%p" + crashLogSuffix
)

// CrashLogName is the name HotSpot gives the crash log of the JVM with pid.
func CrashLogName(pid int) string { return crashLogPrefix + strconv.Itoa(pid) + crashLogSuffix }

// IsCrashLogName says that name is hs_err_pid<digits>.log.
func IsCrashLogName(name string) bool {
	digits, ok := strings.CutPrefix(name, crashLogPrefix)
	if !ok {
		return false
	}
	digits, ok = strings.CutSuffix(digits, crashLogSuffix)
	return ok && allDigits(digits)
}

// Core file names: core-<time>-<executable>-<pid>.core, time as in
// DumpFileName, executable the kernel's %e (the process's comm, at most 15
// bytes) with every byte outside [A-Za-z0-9._] replaced by "_" (so that
// the name has no "/", no "-" to confuse the parse, and never starts with
// "."; an empty name becomes "_").
const (
	corePrefix = "core-"
	coreSuffix = ".core"
	timeLayout = "20060102T150405.000Z"
)

// CoreFileName is the name the `dumpcatcher core` handler gives a finished
// core of process pid running executable, taken at.
func CoreFileName(at time.Time, executable string, pid int) string {
	return corePrefix + at.UTC().Format(timeLayout) + "-" + CoreExecutable(executable) + "-" + strconv.Itoa(pid) + coreSuffix
}

// maxCoreExecutable bounds the executable part of a core file name (the
// kernel's %e is at most 15 bytes; %E or a caller's value may be longer).
const maxCoreExecutable = 64

// CoreExecutable is executable as it appears in a core file name: at most
// maxCoreExecutable bytes, each outside [A-Za-z0-9._] replaced by "_".
func CoreExecutable(executable string) string {
	b := []byte(executable[:min(len(executable), maxCoreExecutable)])
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}

// ParseCoreFileName returns the time, executable and pid of a name made by
// CoreFileName; ok is false for any other name.
func ParseCoreFileName(name string) (at time.Time, executable string, pid int, ok bool) {
	rest, ok1 := strings.CutPrefix(name, corePrefix)
	rest, ok2 := strings.CutSuffix(rest, coreSuffix)
	if !ok1 || !ok2 || len(rest) < len(timeLayout)+4 || rest[len(timeLayout)] != '-' {
		return time.Time{}, "", 0, false
	}
	at, err := time.Parse(timeLayout, rest[:len(timeLayout)])
	if err != nil {
		return time.Time{}, "", 0, false
	}
	rest = rest[len(timeLayout)+1:]
	i := strings.LastIndexByte(rest, '-')
	if i <= 0 || !allDigits(rest[i+1:]) || CoreExecutable(rest[:i]) != rest[:i] {
		return time.Time{}, "", 0, false
	}
	pid, err = strconv.Atoi(rest[i+1:])
	if err != nil {
		return time.Time{}, "", 0, false
	}
	return at, rest[:i], pid, true
}

// IsCoreFileName says that name was made by CoreFileName.
func IsCoreFileName(name string) bool {
	_, _, _, ok := ParseCoreFileName(name)
	return ok
}

func allDigits(s string) bool {
	if s == "" || len(s) > 10 {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// JVM options the webhook puts into JAVA_TOOL_OPTIONS.
const (
	OptHeapDumpOnOOM   = "-XX:+HeapDumpOnOutOfMemoryError"
	OptNoHeapDumpOnOOM = "-XX:-HeapDumpOnOutOfMemoryError"
	OptHeapDumpPath    = "-XX:HeapDumpPath="
	// OptErrorFile names the file HotSpot writes its crash log to.
	OptErrorFile = "-XX:ErrorFile="
)

// DumpOptions are the JVM options that make HotSpot write a heap dump into
// dir on OutOfMemoryError. dir ends in "/" so that a missing directory makes
// the JVM fail to write rather than create a file named like the directory.
// No spaces or quotes: every JDK from 8 to 25 parses them alike.
func DumpOptions(dir string) string {
	return OptHeapDumpOnOOM + " " + OptHeapDumpPath + dir + "/"
}

// ErrorFileOption is the JVM option that makes HotSpot write its crash log
// (hs_err_pid<pid>.log) into dir, where the uploader ships it with reason
// ReasonCrash. No spaces or quotes, as for DumpOptions.
func ErrorFileOption(dir string) string {
	return OptErrorFile + ErrorFilePath(dir)
}

// ErrorFilePath is the -XX:ErrorFile value for dir.
func ErrorFilePath(dir string) string { return dir + "/" + CrashLogPattern }
