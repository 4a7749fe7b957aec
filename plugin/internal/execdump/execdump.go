// Package execdump is the logic of `kubectl dumpcatcher dump POD`: which
// container to run the in-container `dumpcatcher dump` in and where it is
// mounted (the pod's dumpcatcher.io/status annotation), what it printed,
// and waiting (bounded) until the dumps API lists the dump.
package execdump

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/plugin/internal/dumpobj"
	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
	corev1 "k8s.io/api/core/v1"
)

// Executor runs cmd in a container through the pods/exec API.
type Executor interface {
	Exec(ctx context.Context, namespace, pod, container string, cmd []string, stdout, stderr io.Writer) error
}

// Target is where to run the dump.
type Target struct {
	Container string
	MountPath string
}

// Command is the in-container command line.
func (t Target) Command() []string {
	return []string{
		path.Join(t.MountPath, contract.BinDir, contract.BinaryName), "dump",
		contract.FlagReason + "=" + contract.ReasonManual,
		contract.FlagContainer + "=" + t.Container,
	}
}

// Resolve picks the container (container, or the only injected one) and its
// mount path from the pod's dumpcatcher.io/status annotation.
func Resolve(pod *corev1.Pod, container string) (Target, error) {
	raw, ok := pod.Annotations[inject.AnnotationStatus]
	if !ok {
		return Target{}, fmt.Errorf("pod %s/%s has no %s annotation: dumpcatcher did not inject it (label its namespace or pod as the chart's docs say, then recreate the pod)", pod.Namespace, pod.Name, inject.AnnotationStatus)
	}
	st, err := inject.ParseStatus(raw)
	if err != nil {
		return Target{}, fmt.Errorf("pod %s/%s: annotation %s is not the webhook's JSON: %v", pod.Namespace, pod.Name, inject.AnnotationStatus, err)
	}
	var names []string
	for _, c := range st.Containers {
		names = append(names, c.Name)
	}
	var pick *inject.ContainerStatus
	switch {
	case container != "":
		for i := range st.Containers {
			if st.Containers[i].Name == container {
				pick = &st.Containers[i]
			}
		}
		if pick == nil {
			return Target{}, fmt.Errorf("-c %s: container %q of pod %s/%s is not injected by dumpcatcher (injected: %s)", container, container, pod.Namespace, pod.Name, list(names))
		}
	case len(st.Containers) == 1:
		pick = &st.Containers[0]
	case len(st.Containers) == 0:
		return Target{}, fmt.Errorf("pod %s/%s: no container is injected by dumpcatcher (annotation %s lists none)", pod.Namespace, pod.Name, inject.AnnotationStatus)
	default:
		return Target{}, fmt.Errorf("pod %s/%s has several injected containers (%s): choose one with -c CONTAINER", pod.Namespace, pod.Name, list(names))
	}
	mp := pick.MountPath
	if mp == "" {
		mp = contract.SidecarDir
	}
	if !path.IsAbs(mp) || path.Clean(mp) != mp || strings.ContainsAny(mp, "\x00\n") {
		return Target{}, fmt.Errorf("pod %s/%s: annotation %s: container %q has mountPath %q, not a clean absolute path", pod.Namespace, pod.Name, inject.AnnotationStatus, pick.Name, mp)
	}
	return Target{Container: pick.Name, MountPath: mp}, nil
}

func list(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// Written is one dump the in-container command reports.
type Written struct {
	PID  int
	Path string // in the container
	URL  string // the object URL, "" when the uploader did not say
}

var writtenLine = regexp.MustCompile(`^pid (\d+): heap dump written to (\S+) in \S+; the dumpcatcher sidecar uploads it(?: to (\S+))?$`)

// maxLine bounds one line of the command's output (it is the app
// container's: untrusted).
const maxLine = 64 << 10

// Parse reads the output of `dumpcatcher dump` (sidecar/dumper) and returns
// the dumps it wrote.
func Parse(r io.Reader) ([]Written, error) {
	var out []Written
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLine)
	for sc.Scan() {
		m := writtenLine.FindStringSubmatch(strings.TrimRight(sc.Text(), "\r"))
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil {
			continue
		}
		out = append(out, Written{PID: pid, Path: m[2], URL: m[3]})
	}
	return out, sc.Err()
}

// Matches tells whether d is the dump w of container in pod.
func Matches(d dumpobj.Dump, w Written, pod, container string) bool {
	if w.URL != "" {
		return d.URL == w.URL
	}
	return d.Pod == pod && d.Container == container && d.File == path.Base(w.Path)
}

// Lister lists the Dumps of a pod's container.
type Lister func(ctx context.Context) ([]dumpobj.Dump, error)

// ErrNotListed says that the dump did not show up within the wait.
var ErrNotListed = errors.New("not listed yet")

// Wait polls list every interval until a Dump matches w, for at most
// timeout. The uploader needs the time of the upload (a large dump takes a
// while) and the API lists only finished objects. A list error for which
// retry is false (forbidden, not installed) ends the wait at once. When the
// command did not print the object URL, the dumps listed before it ran
// (before: their names) are not candidates: a JVM often has the same pid,
// hence the same file name, in every dump.
func Wait(ctx context.Context, list Lister, retry func(error) bool, w Written, before map[string]bool, pod, container string, interval, timeout time.Duration) (dumpobj.Dump, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr error
	for {
		items, err := list(ctx)
		if err == nil {
			for _, d := range items {
				if w.URL == "" && before[d.Name] {
					continue
				}
				if Matches(d, w, pod, container) {
					return d, nil
				}
			}
		} else if retry == nil || !retry(err) {
			return dumpobj.Dump{}, err
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			what := w.URL
			if what == "" {
				what = w.Path
			}
			if lastErr != nil {
				return dumpobj.Dump{}, fmt.Errorf("the dump %s is %w after %v (the last list failed: %v); run `kubectl dumpcatcher list -n NAMESPACE --pod %s` later, or raise --wait", what, ErrNotListed, timeout, lastErr, pod)
			}
			return dumpobj.Dump{}, fmt.Errorf("the dump %s is %w after %v (the sidecar may still be uploading it); run `kubectl dumpcatcher list -n NAMESPACE --pod %s` later, or raise --wait", what, ErrNotListed, timeout, pod)
		case <-t.C:
		}
	}
}

// Printable wraps w so that the in-container command's output (the app
// container's: untrusted) cannot drive the user's terminal: control
// characters other than newline and tab become '?'.
func Printable(w io.Writer) io.Writer { return printable{w} }

type printable struct{ w io.Writer }

func (p printable) Write(b []byte) (int, error) {
	c := make([]byte, len(b))
	for i, x := range b {
		if (x < 0x20 && x != '\n' && x != '\t') || x == 0x7f {
			x = '?'
		}
		c[i] = x
	}
	if _, err := p.w.Write(c); err != nil {
		return 0, err
	}
	return len(b), nil
}
