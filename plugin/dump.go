package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/dumpcatcher/dumpcatcher/plugin/internal/apierr"
	"github.com/dumpcatcher/dumpcatcher/plugin/internal/dumpobj"
	"github.com/dumpcatcher/dumpcatcher/plugin/internal/execdump"
	"github.com/dumpcatcher/dumpcatcher/plugin/internal/selector"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/util/exec"
)

// Executor runs a command in a container (pods/exec).
type Executor = execdump.Executor

// maxCapture bounds the in-container command's output kept for parsing (it
// is shown to the user as it comes, and is the app container's: untrusted).
const maxCapture = 1 << 20

func (a *app) dumpCmd() *cobra.Command {
	var (
		container string
		download  bool
		wait      time.Duration
		o         downloadOpts
	)
	cmd := &cobra.Command{
		Use:   "dump POD",
		Short: "Take a heap dump of a pod's JVM now (pods/exec), wait until it is listed, download it if asked",
		Example: `  kubectl dumpcatcher dump web-1 -n shop
  kubectl dumpcatcher dump web-1 -n shop -c app --download -o web-1.hprof --decompress`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !download && (o.output != "" || o.decompress) {
				return errors.New("-o and --decompress need --download")
			}
			ns, err := a.namespace()
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			dumps, err := a.takeDump(ctx, c, ns, args[0], container, wait)
			if err != nil {
				return err
			}
			for _, d := range dumps {
				fmt.Fprintf(a.streams.ErrOut, "dump %s is listed; fetch it with: %s\n", d.Name, commandLine(d.Namespace, d.Name))
				if download {
					if err := a.download(ctx, c, d, o); err != nil {
						return err
					}
				} else {
					fmt.Fprintln(a.streams.Out, d.Name)
				}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&container, "container", "c", "", "the container (default: the pod's only injected container)")
	fl.BoolVar(&download, "download", false, "download the dump once it is listed")
	fl.DurationVar(&wait, "wait", 5*time.Minute, "how long to wait for the upload to be listed by the dumps API")
	fl.StringVarP(&o.output, "output", "o", "", "with --download: the file to write (- for stdout)")
	o.addFlags(cmd, false)
	return cmd
}

// takeDump runs the in-container dump and waits until each dump it wrote
// is listed.
func (a *app) takeDump(ctx context.Context, c *client, ns, podName, container string, wait time.Duration) ([]dumpobj.Dump, error) {
	pod, err := c.core.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		return nil, corePodError(err, "get", "pods", ns, podName)
	}
	t, err := execdump.Resolve(pod, container)
	if err != nil {
		return nil, err
	}
	if pod.Status.Phase != corev1.PodRunning {
		return nil, fmt.Errorf("pod %s/%s is %s, not Running: a dump needs the JVM running", ns, podName, pod.Status.Phase)
	}
	sel, err := selector.Build(selector.Filter{Pod: podName, Container: t.Container})
	if err != nil {
		return nil, err
	}
	// The dumps there before, to tell the new one when no URL is printed.
	before := map[string]bool{}
	if l, err := c.dynamic.Namespace(ns).List(ctx, metav1.ListOptions{LabelSelector: sel}); err == nil {
		for _, it := range l.Items {
			before[it.GetName()] = true
		}
	} else if !retryable(err) {
		return nil, c.explain(err, apierr.Request{Verb: "list", Namespace: ns})
	}
	fmt.Fprintf(a.streams.ErrOut, "running %q in %s/%s, container %s\n", t.Command(), ns, podName, t.Container)
	var captured bytes.Buffer
	out := io.MultiWriter(execdump.Printable(a.streams.ErrOut), &limitWriter{w: &captured, n: maxCapture})
	if err := a.deps.executor(c).Exec(ctx, ns, podName, t.Container, t.Command(), out, out); err != nil {
		var ce exec.CodeExitError
		if errors.As(err, &ce) {
			return nil, fmt.Errorf("the in-container dump exited with code %d: see its output above", ce.Code)
		}
		return nil, corePodError(err, "create", "pods/exec", ns, podName)
	}
	written, err := execdump.Parse(&captured)
	if err != nil {
		return nil, err
	}
	if len(written) == 0 {
		return nil, fmt.Errorf("the in-container dump wrote no heap dump: see its output above")
	}
	list := func(ctx context.Context) ([]dumpobj.Dump, error) {
		l, err := c.dynamic.Namespace(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			if retryable(err) {
				return nil, err
			}
			return nil, c.explain(err, apierr.Request{Verb: "list", Namespace: ns})
		}
		var ds []dumpobj.Dump
		for i := range l.Items {
			d, err := dumpobj.From(&l.Items[i])
			if err != nil {
				return nil, err
			}
			ds = append(ds, d)
		}
		return ds, nil
	}
	var found []dumpobj.Dump
	for _, w := range written {
		fmt.Fprintf(a.streams.ErrOut, "waiting (up to %v) for the dumps API to list %s\n", wait, w.Path)
		d, err := execdump.Wait(ctx, list, retryable, w, before, podName, t.Container, 2*time.Second, wait)
		if err != nil {
			return found, err
		}
		found = append(found, d)
	}
	return found, nil
}

// corePodError says which permission a pods request needs.
func corePodError(err error, verb, resource, ns, name string) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("forbidden: you may not %s %s in namespace %q: a Role there must grant verb %q on resource %q (core API group) for `dump`; %w", verb, resource, ns, verb, resource, err)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("pod %q not found in namespace %q: check the name with `kubectl get pods -n %s`", name, ns, ns)
	}
	return err
}

// limitWriter keeps the first n bytes and drops the rest.
type limitWriter struct {
	w io.Writer
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.n -= k
		if _, err := l.w.Write(p[:k]); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// remoteExecutor runs commands through the pods/exec API, over WebSocket
// with a fallback to SPDY (as kubectl exec does).
type remoteExecutor struct{ c *client }

func newRemoteExecutor(c *client) Executor { return remoteExecutor{c: c} }

func (r remoteExecutor) Exec(ctx context.Context, ns, pod, container string, cmd []string, stdout, stderr io.Writer) error {
	req := r.c.core.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	spdy, err := remotecommand.NewSPDYExecutor(r.c.cfg, "POST", req.URL())
	if err != nil {
		return err
	}
	ws, err := remotecommand.NewWebSocketExecutor(r.c.cfg, "GET", req.URL().String())
	if err != nil {
		return err
	}
	e, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return err
	}
	return e.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: stdout, Stderr: stderr})
}
