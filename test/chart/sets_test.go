package chart

import (
	"encoding/base64"
	"encoding/json"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/certs"
	"github.com/dumpcatcher/dumpcatcher/test/chart/render"
	"github.com/dumpcatcher/dumpcatcher/webhook/config"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// valueSet is one configuration of the chart that the tests render, lint
// and apply to a real API server.
type valueSet struct {
	name    string
	release render.Release
	// certManager: the set renders cert-manager objects.
	certManager bool
	// serviceMonitor: the set renders a ServiceMonitor.
	serviceMonitor bool
	// check asserts what is special about the set.
	check func(t *testing.T, r *rendered)
}

// rendered is the chart rendered for one value set, decoded.
type rendered struct {
	release render.Release
	objs    []*unstructured.Unstructured
	// fullname is the object name of the release (the release name here).
	fullname string
}

func (r *rendered) find(t *testing.T, kind string) *unstructured.Unstructured {
	t.Helper()
	return render.Find(t, r.objs, kind, r.fullname)
}

func (r *rendered) has(kind string) bool {
	return slices.ContainsFunc(r.objs, func(o *unstructured.Unstructured) bool { return o.GetKind() == kind })
}

func (r *rendered) deployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	render.Decode(t, r.find(t, "Deployment"), &d)
	return &d
}

func (r *rendered) webhook(t *testing.T) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	var m admissionregistrationv1.MutatingWebhookConfiguration
	render.Decode(t, r.find(t, "MutatingWebhookConfiguration"), &m)
	if len(m.Webhooks) != 1 {
		t.Fatalf("%d webhooks, want 1", len(m.Webhooks))
	}
	return &m
}

// config parses the rendered config.yaml the way the webhook does. The
// version argument would only tag a default sidecar image; the chart always
// names the image, so it never shows.
func (r *rendered) config(t *testing.T) config.Config {
	t.Helper()
	var cm corev1.ConfigMap
	render.Decode(t, r.find(t, "ConfigMap"), &cm)
	c, err := config.Parse([]byte(cm.Data["config.yaml"]), "not-the-chart-version")
	if err != nil {
		t.Fatalf("the rendered config.yaml is rejected by the webhook: %v\n%s", err, cm.Data["config.yaml"])
	}
	return c
}

func renderSet(t *testing.T, vs valueSet) *rendered {
	t.Helper()
	rel := vs.release
	if rel.Name == "" {
		rel.Name = "dumpcatcher"
	}
	if rel.Namespace == "" {
		rel.Namespace = "dumpcatcher"
	}
	r := &rendered{release: rel, objs: render.Objects(t, rel.Template(t)), fullname: rel.Name}
	if fo, ok := rel.Values["fullnameOverride"].(string); ok && fo != "" {
		r.fullname = fo
	} else if !strings.Contains(rel.Name, "dumpcatcher") {
		r.fullname = rel.Name + "-dumpcatcher"
	}
	return r
}

func chartAppVersion(t *testing.T) string {
	t.Helper()
	var meta struct {
		AppVersion string `json:"appVersion"`
	}
	readYAML(t, filepath.Join(render.ChartDir(t), "Chart.yaml"), &meta)
	if meta.AppVersion == "" {
		t.Fatal("Chart.yaml has no appVersion")
	}
	return meta.AppVersion
}

// defaultConfig is the configuration the default values must render: the
// webhook's own defaults, with the sidecar image of the chart's appVersion.
func defaultConfig(t *testing.T) config.Config {
	t.Helper()
	return config.Default(chartAppVersion(t))
}

var (
	testCAOnce sync.Once
	testCAPEM  []byte
)

// testCA is a PEM CA certificate for the sets without cert-manager, the same
// for the whole test binary (sets are built and checked in different tests).
func testCA(t testing.TB) []byte {
	testCAOnce.Do(func() { testCAPEM = certs.NewNamedCA(t, "dumpcatcher-test-ca").CertPEM })
	return testCAPEM
}

func valueSets(t *testing.T) []valueSet {
	root := render.RepoRoot(t)
	sets := []valueSet{
		{name: "defaults", certManager: true, check: checkDefaults},
		{
			name:    "without-cert-manager",
			release: render.Release{Name: "dc-nocm", Namespace: "dc-nocm", Values: map[string]any{"certManager": map[string]any{"enabled": false}, "tls": map[string]any{"secretName": "my-webhook-tls", "caBundle": string(testCA(t))}}},
			check: func(t *testing.T, r *rendered) {
				for _, o := range r.objs {
					if o.GroupVersionKind().Group == "cert-manager.io" {
						t.Errorf("cert-manager object %s %s rendered with certManager.enabled=false", o.GetKind(), o.GetName())
					}
				}
				mwc := r.webhook(t)
				if string(mwc.Webhooks[0].ClientConfig.CABundle) != string(testCA(t)) {
					t.Errorf("caBundle = %q, want the PEM given in tls.caBundle", mwc.Webhooks[0].ClientConfig.CABundle)
				}
				if _, ok := mwc.Annotations["cert-manager.io/inject-ca-from"]; ok {
					t.Error("cert-manager.io/inject-ca-from set without cert-manager")
				}
				if got := volume(t, r.deployment(t), "tls").Secret.SecretName; got != "my-webhook-tls" {
					t.Errorf("tls volume Secret = %q, want my-webhook-tls", got)
				}
				// The base64 form of the same PEM gives the same caBundle.
				b64 := r.release
				b64.Values = map[string]any{"certManager": map[string]any{"enabled": false}, "tls": map[string]any{"secretName": "my-webhook-tls", "caBundle": base64.StdEncoding.EncodeToString(testCA(t))}}
				r2 := &rendered{release: b64, objs: render.Objects(t, b64.Template(t)), fullname: r.fullname}
				if got := r2.webhook(t).Webhooks[0].ClientConfig.CABundle; string(got) != string(testCA(t)) {
					t.Errorf("base64 tls.caBundle: caBundle = %q, want the PEM", got)
				}
			},
		},
		{
			name:        "fail-closed",
			certManager: true,
			release:     render.Release{Name: "dc-fail", Namespace: "dc-fail", Values: map[string]any{"webhook": map[string]any{"failurePolicy": "Fail", "timeoutSeconds": 3}}},
			check: func(t *testing.T, r *rendered) {
				w := r.webhook(t).Webhooks[0]
				if *w.FailurePolicy != admissionregistrationv1.Fail || *w.TimeoutSeconds != 3 {
					t.Errorf("failurePolicy %s, timeoutSeconds %d; want Fail, 3", *w.FailurePolicy, *w.TimeoutSeconds)
				}
			},
		},
		{
			name:        "excluded-namespaces",
			certManager: true,
			release:     render.Release{Name: "dc-excl", Namespace: "dc-excl", Values: map[string]any{"webhook": map[string]any{"excludedNamespaces": []string{"monitoring", "kube-system", "batch-jobs"}}}},
			check: func(t *testing.T, r *rendered) {
				sel := r.webhook(t).Webhooks[0].NamespaceSelector
				if len(sel.MatchExpressions) != 1 {
					t.Fatalf("namespaceSelector = %+v", sel)
				}
				want := []string{"dc-excl", "kube-system", "monitoring", "batch-jobs"}
				if got := sel.MatchExpressions[0].Values; !slices.Equal(got, want) {
					t.Errorf("excluded by the webhook configuration: %q, want %q", got, want)
				}
				want = []string{"monitoring", "kube-system", "batch-jobs"}
				if got := r.config(t).ExcludedNamespaces; !slices.Equal(got, want) {
					t.Errorf("config excludedNamespaces = %q, want %q", got, want)
				}
			},
		},
		{
			name:           "monitoring",
			certManager:    true,
			serviceMonitor: true,
			release: render.Release{Name: "dc-mon", Namespace: "dc-mon", Values: map[string]any{
				"metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true, "interval": "15s", "labels": map[string]any{"release": "prometheus"}}},
				"networkPolicy": map[string]any{
					"enabled":     true,
					"webhookFrom": []any{map[string]any{"ipBlock": map[string]any{"cidr": "10.0.0.0/8"}}},
					"metricsFrom": []any{map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "monitoring"}}}},
					"egress":      []any{map[string]any{"ports": []any{map[string]any{"port": 6443, "protocol": "TCP"}}}},
				},
			}},
			check: checkMonitoring,
		},
		{
			name:        "custom-sidecar",
			certManager: true,
			release: render.Release{Name: "dc-sidecar", Namespace: "dc-sidecar", Values: map[string]any{"config": map[string]any{
				"destination":                      "s3://heap-dumps/prod/eu?endpoint=https://s3.example.com:9000&region=eu-1&path-style=true",
				"credentialsSecret":                "dumpcatcher-s3",
				"mountPath":                        "/dumps",
				"sizeLimit":                        "8Gi",
				"preStop":                          "always",
				"minTerminationGracePeriodSeconds": 120,
				"nativeSidecar":                    "never",
				"sidecar": map[string]any{
					"image":           map[string]any{"repository": "registry.example.com:5000/mirror/dumpcatcher", "tag": "v9.9.9"},
					"imagePullPolicy": "Always",
					"resources":       map[string]any{"requests": map[string]any{"cpu": "50m", "memory": "64Mi"}, "limits": map[string]any{"cpu": "1", "memory": "256Mi"}},
				},
				"upload": map[string]any{"compression": "zstd", "keyTemplate": "{namespace}/{date}/{time}-{file}", "quietPeriod": "90s", "drainTimeout": "1m30s", "metricsPort": 9464},
			}}},
			check: func(t *testing.T, r *rendered) {
				want := config.Config{
					Destination:       "s3://heap-dumps/prod/eu?endpoint=https://s3.example.com:9000&region=eu-1&path-style=true",
					CredentialsSecret: "dumpcatcher-s3", MountPath: "/dumps", SizeLimit: "8Gi", PreStop: "always",
					MinTerminationGracePeriodSeconds: 120, NativeSidecar: "never", ExcludedNamespaces: []string{},
					Sidecar: config.Sidecar{
						Image: "registry.example.com:5000/mirror/dumpcatcher:v9.9.9", ImagePullPolicy: corev1.PullAlways,
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
							Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("256Mi")},
						},
					},
					Upload: config.Upload{Compression: "zstd", KeyTemplate: "{namespace}/{date}/{time}-{file}", QuietPeriod: "90s", DrainTimeout: "1m30s", MetricsPort: 9464},
				}
				assertConfig(t, r.config(t), want)
			},
		},
		{
			name:        "scheduling-and-metadata",
			certManager: true,
			release: render.Release{Name: "dc-sched", Namespace: "dc-sched", Values: map[string]any{
				"fullnameOverride":  "heapdumps",
				"replicaCount":      3,
				"image":             map[string]any{"digest": "sha256:" + sixtyFour("a")},
				"imagePullSecrets":  []any{map[string]any{"name": "regcred"}},
				"serviceAccount":    map[string]any{"name": "heapdumps-sa", "annotations": map[string]any{"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
				"commonLabels":      map[string]any{"team": "platform"},
				"podLabels":         map[string]any{"tier": "admission"},
				"podAnnotations":    map[string]any{"example.com/scrape": "true"},
				"nodeSelector":      map[string]any{"node-role.kubernetes.io/infra": ""},
				"tolerations":       []any{map[string]any{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}},
				"affinity":          map[string]any{"nodeAffinity": map[string]any{"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{"nodeSelectorTerms": []any{map[string]any{"matchExpressions": []any{map[string]any{"key": "kubernetes.io/arch", "operator": "In", "values": []any{"amd64", "arm64"}}}}}}}},
				"priorityClassName": "system-cluster-critical",
				"podDisruptionBudget": map[string]any{
					"maxUnavailable": "34%",
				},
				"topologySpreadConstraints": []any{map[string]any{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}},
				"logLevel":                  "debug",
				"extraArgs":                 []any{"--zap-encoder=console"},
			}},
			check: checkScheduling,
		},
		{
			name:        "single-replica",
			certManager: true,
			release:     render.Release{Name: "dc-one", Namespace: "dc-one", Values: map[string]any{"replicaCount": 1}},
			check: func(t *testing.T, r *rendered) {
				if r.has("PodDisruptionBudget") {
					t.Error("a PodDisruptionBudget for one replica would block node drains")
				}
			},
		},
		{
			name:        "example-minio",
			certManager: true,
			release:     render.Release{Name: "dc-minio", Namespace: "dc-minio", ValuesFiles: []string{filepath.Join(root, "deploy", "examples", "values-minio.yaml")}},
			check: func(t *testing.T, r *rendered) {
				c := r.config(t)
				if c.Destination == "" || c.CredentialsSecret == "" {
					t.Errorf("values-minio.yaml: destination %q, credentialsSecret %q", c.Destination, c.CredentialsSecret)
				}
			},
		},
	}
	return append(sets, apiValueSets(t)...)
}

func checkDefaults(t *testing.T, r *rendered) {
	ns, name := r.release.Namespace, r.fullname
	// Exactly these objects, and never a Secret.
	want := map[string]bool{
		"ServiceAccount/" + name: true, "ClusterRole/" + name: true, "ClusterRoleBinding/" + name: true,
		"ConfigMap/" + name: true, "Service/" + name: true, "Deployment/" + name: true,
		"PodDisruptionBudget/" + name: true, "MutatingWebhookConfiguration/" + name: true,
		"Issuer/" + name + "-selfsigned": true, "Certificate/" + name + "-ca": true,
		"Issuer/" + name + "-ca": true, "Certificate/" + name + "-tls": true,
	}
	for _, o := range r.objs {
		id := o.GetKind() + "/" + o.GetName()
		if !want[id] {
			t.Errorf("unexpected object %s", id)
		}
		delete(want, id)
	}
	for id := range want {
		t.Errorf("missing object %s", id)
	}

	d := r.deployment(t)
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %d, want 2", *d.Spec.Replicas)
	}
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	if want := "ghcr.io/dumpcatcher/dumpcatcher-webhook:" + chartAppVersion(t); c.Image != want {
		t.Errorf("image = %s, want %s", c.Image, want)
	}
	if !slices.Equal(c.Args[:2], []string{"--config=/etc/dumpcatcher/config.yaml", "--cert-dir=/etc/dumpcatcher/tls"}) {
		t.Errorf("args = %q", c.Args)
	}
	if len(c.Env) != 1 || c.Env[0].Name != "POD_NAMESPACE" || c.Env[0].ValueFrom == nil || c.Env[0].ValueFrom.FieldRef == nil || c.Env[0].ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("env = %+v, want POD_NAMESPACE from metadata.namespace", c.Env)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["https"] != 9443 || ports["metrics"] != 8080 || ports["healthz"] != 8081 {
		t.Errorf("ports = %v", ports)
	}
	for _, p := range []struct {
		probe *corev1.Probe
		path  string
	}{{c.ReadinessProbe, "/readyz"}, {c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || ports[p.probe.HTTPGet.Port.StrVal] != 8081 {
			t.Errorf("probe %s: %+v", p.path, p.probe)
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources = %+v", c.Resources)
	}
	// Pod Security Standard "restricted" (envtest checks it for real).
	psc, sc := pod.SecurityContext, c.SecurityContext
	if psc == nil || sc == nil || !isTrue(psc.RunAsNonRoot) || psc.RunAsUser == nil || *psc.RunAsUser != 65532 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !isTrue(sc.ReadOnlyRootFilesystem) ||
		sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("security contexts are not restricted: pod %+v container %+v", psc, sc)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	if m := mounts["config"]; m.MountPath != "/etc/dumpcatcher/config.yaml" || m.SubPath != "config.yaml" || volume(t, d, "config").ConfigMap.Name != name {
		t.Errorf("config mount %+v", m)
	}
	if m := mounts["tls"]; m.MountPath != "/etc/dumpcatcher/tls" || !m.ReadOnly || volume(t, d, "tls").Secret.SecretName != name+"-tls" {
		t.Errorf("tls mount %+v", m)
	}
	if len(pod.TopologySpreadConstraints) != 1 || pod.TopologySpreadConstraints[0].TopologyKey != "kubernetes.io/hostname" ||
		!equalMaps(pod.TopologySpreadConstraints[0].LabelSelector.MatchLabels, d.Spec.Selector.MatchLabels) {
		t.Errorf("topologySpreadConstraints = %+v", pod.TopologySpreadConstraints)
	}
	if pod.ServiceAccountName != name {
		t.Errorf("serviceAccountName = %q", pod.ServiceAccountName)
	}
	if !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Errorf("selector %v does not select the pod labels %v", d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
	}

	var svc corev1.Service
	render.Decode(t, r.find(t, "Service"), &svc)
	if !equalMaps(svc.Spec.Selector, d.Spec.Selector.MatchLabels) || len(svc.Spec.Ports) == 0 ||
		svc.Spec.Ports[0].Port != 443 || ports[svc.Spec.Ports[0].TargetPort.StrVal] != 9443 {
		t.Errorf("service %+v", svc.Spec)
	}

	var pdb policyv1.PodDisruptionBudget
	render.Decode(t, r.find(t, "PodDisruptionBudget"), &pdb)
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || !equalMaps(pdb.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels) {
		t.Errorf("pdb %+v", pdb.Spec)
	}

	// Least privilege: get, list and watch namespaces, nothing else.
	var role rbacv1.ClusterRole
	render.Decode(t, r.find(t, "ClusterRole"), &role)
	if len(role.Rules) != 1 || !slices.Equal(role.Rules[0].APIGroups, []string{""}) || !slices.Equal(role.Rules[0].Resources, []string{"namespaces"}) ||
		!slices.Equal(role.Rules[0].Verbs, []string{"get", "list", "watch"}) || len(role.Rules[0].ResourceNames) != 0 {
		t.Errorf("ClusterRole rules = %+v", role.Rules)
	}
	var binding rbacv1.ClusterRoleBinding
	render.Decode(t, r.find(t, "ClusterRoleBinding"), &binding)
	if binding.RoleRef.Name != name || len(binding.Subjects) != 1 || binding.Subjects[0].Name != name || binding.Subjects[0].Namespace != ns {
		t.Errorf("binding %+v", binding)
	}

	assertConfig(t, r.config(t), defaultConfig(t))

	mwc := r.webhook(t)
	w := mwc.Webhooks[0]
	svcRef := w.ClientConfig.Service
	if w.Name != "pods.dumpcatcher.io" || svcRef == nil || svcRef.Name != name || svcRef.Namespace != ns || *svcRef.Path != "/mutate-v1-pod" || *svcRef.Port != 443 {
		t.Errorf("webhook %s client %+v", w.Name, w.ClientConfig)
	}
	if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) || !slices.Equal(w.Rules[0].Resources, []string{"pods"}) ||
		!slices.Equal(w.Rules[0].APIGroups, []string{""}) || !slices.Equal(w.Rules[0].APIVersions, []string{"v1"}) {
		t.Errorf("rules = %+v", w.Rules)
	}
	if w.ObjectSelector != nil {
		t.Errorf("objectSelector %+v: the handler decides (annotations are invisible to selectors)", w.ObjectSelector)
	}
	sel := w.NamespaceSelector
	if sel == nil || len(sel.MatchLabels) != 0 || len(sel.MatchExpressions) != 1 || sel.MatchExpressions[0].Key != "kubernetes.io/metadata.name" ||
		sel.MatchExpressions[0].Operator != "NotIn" || !slices.Equal(sel.MatchExpressions[0].Values, []string{ns, "kube-system"}) {
		t.Errorf("namespaceSelector = %+v", sel)
	}
	if *w.FailurePolicy != admissionregistrationv1.Ignore || *w.TimeoutSeconds != 5 || *w.SideEffects != admissionregistrationv1.SideEffectClassNone ||
		*w.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy || !slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("failurePolicy %v timeout %v sideEffects %v reinvocation %v versions %v", *w.FailurePolicy, *w.TimeoutSeconds, *w.SideEffects, *w.ReinvocationPolicy, w.AdmissionReviewVersions)
	}
	if len(w.ClientConfig.CABundle) != 0 {
		t.Error("caBundle rendered although cert-manager injects it")
	}

	// cert-manager: inject-ca-from names the serving Certificate, whose
	// Secret the Deployment mounts, issued by a CA Issuer whose CA
	// Certificate comes from a self-signed Issuer.
	serving := render.Find(t, r.objs, "Certificate", name+"-tls")
	if got := mwc.Annotations["cert-manager.io/inject-ca-from"]; got != ns+"/"+serving.GetName() {
		t.Errorf("inject-ca-from = %q", got)
	}
	if s := str(serving, "spec", "secretName"); s != volume(t, d, "tls").Secret.SecretName {
		t.Errorf("serving certificate Secret %q is not the one mounted", s)
	}
	if got, want := strs(serving, "spec", "dnsNames"), []string{name, name + "." + ns, name + "." + ns + ".svc", name + "." + ns + ".svc.cluster.local"}; !slices.Equal(got, want) {
		t.Errorf("dnsNames = %q, want %q", got, want)
	}
	caIssuer := render.Find(t, r.objs, "Issuer", str(serving, "spec", "issuerRef", "name"))
	caCert := render.Find(t, r.objs, "Certificate", name+"-ca")
	if str(caIssuer, "spec", "ca", "secretName") != str(caCert, "spec", "secretName") {
		t.Error("the CA Issuer does not use the CA Certificate's Secret")
	}
	if isCA, _, _ := unstructured.NestedBool(caCert.Object, "spec", "isCA"); !isCA {
		t.Error("CA Certificate is not isCA")
	}
	self := render.Find(t, r.objs, "Issuer", str(caCert, "spec", "issuerRef", "name"))
	if _, ok, _ := unstructured.NestedMap(self.Object, "spec", "selfSigned"); !ok {
		t.Error("the CA Certificate's Issuer is not selfSigned")
	}

	// Every object carries the standard labels; namespaced ones are in the
	// release namespace.
	for _, o := range r.objs {
		l := o.GetLabels()
		if l["app.kubernetes.io/name"] != "dumpcatcher" || l["app.kubernetes.io/instance"] != r.release.Name || l["app.kubernetes.io/managed-by"] != "Helm" {
			t.Errorf("%s %s labels %v", o.GetKind(), o.GetName(), l)
		}
		clusterScoped := o.GetKind() == "ClusterRole" || o.GetKind() == "ClusterRoleBinding" || o.GetKind() == "MutatingWebhookConfiguration"
		if (o.GetNamespace() == "") != clusterScoped || (!clusterScoped && o.GetNamespace() != ns) {
			t.Errorf("%s %s namespace %q", o.GetKind(), o.GetName(), o.GetNamespace())
		}
	}
}

func checkMonitoring(t *testing.T, r *rendered) {
	var svc corev1.Service
	render.Decode(t, r.find(t, "Service"), &svc)
	sm := r.find(t, "ServiceMonitor")
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	if !selects(sel, svc.Labels) {
		t.Errorf("ServiceMonitor selector %v does not select the Service %v", sel, svc.Labels)
	}
	if sm.GetLabels()["release"] != "prometheus" {
		t.Errorf("ServiceMonitor labels %v lack serviceMonitor.labels", sm.GetLabels())
	}
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(eps) != 1 || eps[0].(map[string]any)["port"] != "metrics" || eps[0].(map[string]any)["interval"] != "15s" {
		t.Errorf("endpoints %v", eps)
	}
	if !hasServicePort(svc, "metrics") {
		t.Error("the Service has no metrics port")
	}
	var np networkingv1.NetworkPolicy
	render.Decode(t, r.find(t, "NetworkPolicy"), &np)
	d := r.deployment(t)
	if !equalMaps(np.Spec.PodSelector.MatchLabels, d.Spec.Selector.MatchLabels) {
		t.Errorf("NetworkPolicy selects %v", np.Spec.PodSelector.MatchLabels)
	}
	names := map[string]bool{}
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		names[p.Name] = true
	}
	from := map[string][]networkingv1.NetworkPolicyPeer{}
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if !names[p.Port.StrVal] {
				t.Errorf("NetworkPolicy port %v is not a container port", p.Port)
			}
			from[p.Port.StrVal] = rule.From
		}
	}
	if len(from["https"]) != 1 || from["https"][0].IPBlock == nil || from["https"][0].IPBlock.CIDR != "10.0.0.0/8" {
		t.Errorf("webhook port from %+v", from["https"])
	}
	if len(from["metrics"]) != 1 || from["metrics"][0].NamespaceSelector == nil {
		t.Errorf("metrics port from %+v", from["metrics"])
	}
	if len(np.Spec.PolicyTypes) != 2 || len(np.Spec.Egress) != 1 {
		t.Errorf("policyTypes %v egress %+v", np.Spec.PolicyTypes, np.Spec.Egress)
	}
}

func checkScheduling(t *testing.T, r *rendered) {
	if r.fullname != "heapdumps" {
		t.Fatalf("fullname %q", r.fullname)
	}
	d := r.deployment(t)
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	if *d.Spec.Replicas != 3 || c.Image != "ghcr.io/dumpcatcher/dumpcatcher-webhook@sha256:"+sixtyFour("a") {
		t.Errorf("replicas %d image %s", *d.Spec.Replicas, c.Image)
	}
	if len(pod.ImagePullSecrets) != 1 || pod.ImagePullSecrets[0].Name != "regcred" || pod.PriorityClassName != "system-cluster-critical" ||
		len(pod.Tolerations) != 1 || pod.Affinity == nil || pod.Affinity.NodeAffinity == nil || pod.NodeSelector["node-role.kubernetes.io/infra"] != "" || pod.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("pod scheduling: %+v", pod)
	}
	if pod.ServiceAccountName != "heapdumps-sa" || render.Find(t, r.objs, "ServiceAccount", "heapdumps-sa").GetAnnotations()["eks.amazonaws.com/role-arn"] == "" {
		t.Errorf("serviceAccountName %q", pod.ServiceAccountName)
	}
	if d.Spec.Template.Labels["tier"] != "admission" || d.Spec.Template.Annotations["example.com/scrape"] != "true" || d.Spec.Template.Annotations["checksum/config"] == "" {
		t.Errorf("pod metadata %+v", d.Spec.Template.ObjectMeta)
	}
	for _, o := range r.objs {
		if o.GetLabels()["team"] != "platform" {
			t.Errorf("%s %s lacks commonLabels", o.GetKind(), o.GetName())
		}
	}
	if tsc := pod.TopologySpreadConstraints; len(tsc) != 1 || tsc[0].TopologyKey != "topology.kubernetes.io/zone" || tsc[0].LabelSelector == nil || !equalMaps(tsc[0].LabelSelector.MatchLabels, d.Spec.Selector.MatchLabels) {
		t.Errorf("topologySpreadConstraints %+v", tsc)
	}
	if !slices.Equal(c.Args[len(c.Args)-2:], []string{"--zap-log-level=debug", "--zap-encoder=console"}) {
		t.Errorf("args %q", c.Args)
	}
	var pdb policyv1.PodDisruptionBudget
	render.Decode(t, r.find(t, "PodDisruptionBudget"), &pdb)
	if pdb.Spec.MinAvailable != nil || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.StrVal != "34%" {
		t.Errorf("pdb %+v", pdb.Spec)
	}
	if r.find(t, "MutatingWebhookConfiguration").GetAnnotations()["cert-manager.io/inject-ca-from"] != "dc-sched/heapdumps-tls" {
		t.Error("inject-ca-from does not follow fullnameOverride")
	}
}

// assertConfig compares configurations by their JSON, which compares
// quantities by value.
func assertConfig(t *testing.T, got, want config.Config) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("rendered config:\n got %s\nwant %s", g, w)
	}
}

func volume(t *testing.T, d *appsv1.Deployment, name string) corev1.Volume {
	t.Helper()
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == name {
			if (v.Secret == nil) == (v.ConfigMap == nil) {
				t.Fatalf("volume %s: %+v", name, v)
			}
			return v
		}
	}
	t.Fatalf("no volume %s", name)
	return corev1.Volume{}
}

func hasServicePort(svc corev1.Service, name string) bool {
	return slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == name })
}

func str(o *unstructured.Unstructured, fields ...string) string {
	s, _, _ := unstructured.NestedString(o.Object, fields...)
	return s
}

func strs(o *unstructured.Unstructured, fields ...string) []string {
	s, _, _ := unstructured.NestedStringSlice(o.Object, fields...)
	return s
}

// equalMaps reports whether a selector is the same as another, and not
// empty (an empty one would select everything).
func equalMaps(a, b map[string]string) bool {
	return len(a) > 0 && maps.Equal(a, b)
}

// selects reports whether the selector sel, not empty, selects the labels.
func selects(sel, l map[string]string) bool {
	return len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(l))
}

func isTrue(b *bool) bool { return b != nil && *b }

func sixtyFour(c string) string {
	s := ""
	for len(s) < 64 {
		s += c
	}
	return s
}

func readYAML(t *testing.T, file string, into any) {
	t.Helper()
	b, err := readFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}
