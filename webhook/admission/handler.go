// Package admission adapts the pure injection (webhook/inject) to Kubernetes
// admission requests: decode, look up the namespace, inject, answer with a
// JSON patch, warnings or a denial, and count and log every answer.
package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/dumpcatcher/dumpcatcher/webhook/inject"
	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// Path is where the handler is served.
const Path = "/mutate-v1-pod"

// Outcomes, the values of the metrics' outcome label.
const (
	OutcomeInjected = "injected"
	OutcomeSkipped  = "skipped"
	OutcomeDenied   = "denied"
	OutcomeError    = "error"
)

// NamespaceLabels returns the labels of a namespace.
type NamespaceLabels func(ctx context.Context, name string) (map[string]string, error)

// Handler answers pod admission requests.
type Handler struct {
	Options    inject.Options
	Namespaces NamespaceLabels
	Metrics    *Metrics
	Log        logr.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

var _ admission.Handler = (*Handler)(nil)

// Handle implements admission.Handler. It never panics on bad input: a
// request it cannot read gets an error response.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	now := h.Now
	if now == nil {
		now = time.Now
	}
	start := now()
	resp, outcome, detail := h.handle(ctx, req)
	elapsed := now().Sub(start)
	if h.Metrics != nil {
		h.Metrics.observe(outcome, elapsed)
	}
	name := ""
	if len(req.Object.Raw) > 0 {
		var meta struct {
			Metadata struct {
				Name         string `json:"name"`
				GenerateName string `json:"generateName"`
			} `json:"metadata"`
		}
		if json.Unmarshal(req.Object.Raw, &meta) == nil {
			name = meta.Metadata.Name
			if name == "" {
				name = meta.Metadata.GenerateName
			}
		}
	}
	h.Log.Info("admission", "uid", req.UID, "namespace", req.Namespace, "pod", name,
		"operation", req.Operation, "outcome", outcome, "detail", detail,
		"warnings", len(resp.Warnings), "duration", elapsed.String())
	return resp
}

func (h *Handler) handle(ctx context.Context, req admission.Request) (admission.Response, string, string) {
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" {
		return admission.Allowed("dumpcatcher only injects pods"), OutcomeSkipped, "kind " + req.Kind.Kind
	}
	if req.Operation != admissionv1.Create || req.SubResource != "" {
		return admission.Allowed("dumpcatcher only injects at pod creation"), OutcomeSkipped, "operation " + string(req.Operation)
	}
	if len(req.Object.Raw) == 0 {
		return admission.Errored(http.StatusBadRequest, errors.New("admission request has no object")), OutcomeError, "no object"
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding pod: %w", err)), OutcomeError, err.Error()
	}
	ns := req.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	var labels map[string]string
	if h.Namespaces != nil && ns != "" {
		l, err := h.Namespaces(ctx, ns)
		if err != nil {
			return admission.Errored(http.StatusInternalServerError, fmt.Errorf("reading namespace %s: %w", ns, err)), OutcomeError, err.Error()
		}
		labels = l
	}
	res, err := inject.Inject(inject.Input{Pod: &pod, Namespace: ns, NamespaceLabels: labels}, h.Options)
	var ae *inject.AnnotationError
	switch {
	case errors.As(err, &ae):
		return admission.Denied("dumpcatcher: " + ae.Error()), OutcomeDenied, ae.Error()
	case err != nil:
		return admission.Errored(http.StatusInternalServerError, err), OutcomeError, err.Error()
	case !res.Injected:
		return admission.Allowed(res.Reason).WithWarnings(res.Warnings...), OutcomeSkipped, res.Reason
	}
	patch, err := podPatch(req.Object.Raw, &pod, res.Pod)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err), OutcomeError, err.Error()
	}
	resp := admission.Patched("dumpcatcher injected", patch...).WithWarnings(res.Warnings...)
	return resp, OutcomeInjected, ""
}
