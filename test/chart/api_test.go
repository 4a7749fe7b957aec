package chart

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/test/chart/render"
	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// The dumps API's fixed names (docs/ and the plugin's errors name them).
const (
	apiServiceName   = "v1alpha1.dumps.dumpcatcher.io"
	dumpsGroup       = "dumps.dumpcatcher.io"
	roleReader       = "dumpcatcher-dumps-reader"
	roleDownloader   = "dumpcatcher-dumps-downloader"
	roleAdmin        = "dumpcatcher-dumps-admin"
	apiConfigDir     = "/etc/dumpcatcher-api"
	apiSecurePort    = 6443
	apiCredentialDir = apiConfigDir + "/credentials/"
)

var dumpsRoles = []string{roleReader, roleDownloader, roleAdmin}

// apiConfig is dumpcatcher-api's --config file as DUMPSAPI.md defines it:
// destinations {name, url, credentialsDir, caFile} and the presign switch.
// Parsed strictly, so a key the server does not know fails the test.
type apiConfig struct {
	Destinations []apiDestination `json:"destinations"`
	Presign      apiPresign       `json:"presign"`
}

type apiDestination struct {
	Name           string `json:"name"`
	URL            string `json:"url"`
	CredentialsDir string `json:"credentialsDir,omitempty"`
	CAFile         string `json:"caFile,omitempty"`
}

type apiPresign struct {
	Enabled bool   `json:"enabled"`
	Expiry  string `json:"expiry"`
}

// apiService is the part of apiregistration.k8s.io/v1 APIService the chart
// sets (the module does not depend on k8s.io/kube-aggregator).
type apiService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              apiServiceSpec `json:"spec"`
}

type apiServiceSpec struct {
	Service               *apiServiceRef `json:"service,omitempty"`
	Group                 string         `json:"group"`
	Version               string         `json:"version"`
	InsecureSkipTLSVerify bool           `json:"insecureSkipTLSVerify,omitempty"`
	CABundle              []byte         `json:"caBundle,omitempty"`
	GroupPriorityMinimum  int32          `json:"groupPriorityMinimum"`
	VersionPriority       int32          `json:"versionPriority"`
}

type apiServiceRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Port      *int32 `json:"port,omitempty"`
}

// apiName is the name of the API's objects: the full name, cut to 59
// characters (without a trailing "-"), plus "-api".
func (r *rendered) apiName() string {
	n := r.fullname
	if len(n) > 59 {
		n = strings.TrimSuffix(n[:59], "-")
	}
	return n + "-api"
}

func (r *rendered) apiDeployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	render.Decode(t, render.Find(t, r.objs, "Deployment", r.apiName()), &d)
	return &d
}

func (r *rendered) apiService(t *testing.T) *apiService {
	t.Helper()
	var s apiService
	render.Decode(t, render.Find(t, r.objs, "APIService", apiServiceName), &s)
	return &s
}

// apiConfigText is config.yaml of the API's ConfigMap.
func (r *rendered) apiConfigText(t *testing.T) string {
	t.Helper()
	var cm corev1.ConfigMap
	render.Decode(t, render.Find(t, r.objs, "ConfigMap", r.apiName()), &cm)
	return cm.Data["config.yaml"]
}

func (r *rendered) apiConfig(t *testing.T) apiConfig {
	t.Helper()
	var c apiConfig
	if err := yaml.UnmarshalStrict([]byte(r.apiConfigText(t)), &c); err != nil {
		t.Fatalf("the API's config.yaml: %v\n%s", err, r.apiConfigText(t))
	}
	for _, d := range c.Destinations {
		if _, err := contract.ParseDestination(d.URL); err != nil {
			t.Errorf("destination %s: %v", d.Name, err)
		}
	}
	return c
}

// newTestCA returns the PEM of a new self-signed CA certificate.
func newTestCA(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// apiValues are the values of the "api" set: the default destination, three
// more (one with its own Secret, one file://) and every API knob changed.
func apiValues() map[string]any {
	return map[string]any{
		"config": map[string]any{"destination": "s3://heap-dumps/prod?endpoint=https://minio.example.com:9000&path-style=true"},
		"api": map[string]any{
			"enabled":           true,
			"credentialsSecret": "dumps-read",
			"destinations": []any{
				map[string]any{"name": "archive", "url": "s3://heap-archive/eu"},
				map[string]any{"name": "team-b", "url": "s3://team-b-dumps", "credentialsSecret": "team-b-read"},
				map[string]any{"name": "local", "url": "file:///var/dumps"},
			},
			"presign":           map[string]any{"enabled": false, "expiry": "5m"},
			"rbac":              map[string]any{"aggregateToAdmin": true},
			"extraArgs":         []any{"--v=2"},
			"extraVolumes":      []any{map[string]any{"name": "dumps", "persistentVolumeClaim": map[string]any{"claimName": "dumps", "readOnly": true}}},
			"extraVolumeMounts": []any{map[string]any{"name": "dumps", "mountPath": "/var/dumps", "readOnly": true}},
			"podAnnotations":    map[string]any{"example.com/team": "platform"},
		},
		"networkPolicy": map[string]any{"enabled": true, "apiFrom": []any{map[string]any{"ipBlock": map[string]any{"cidr": "10.0.0.0/8"}}}},
	}
}

func apiValueSets(t *testing.T) []valueSet {
	return []valueSet{
		{name: "api", certManager: true, release: render.Release{Name: "dc-api", Namespace: "dc-api", Values: apiValues()}, check: checkAPI},
		{
			name: "api-without-cert-manager",
			release: render.Release{Name: "dc-api-nocm", Namespace: "dc-api-nocm", Values: map[string]any{
				"certManager": map[string]any{"enabled": false},
				"tls":         map[string]any{"secretName": "my-webhook-tls", "caBundle": string(testCA(t))},
				"api": map[string]any{
					"enabled":             true,
					"replicaCount":        3,
					"podDisruptionBudget": map[string]any{"maxUnavailable": 1},
					"destinations":        []any{map[string]any{"name": "local", "url": "file:///var/dumps"}},
					"credentialsSecret":   "unused-for-file",
					"serviceAccount":      map[string]any{"name": "dumps-api"},
					"tls":                 map[string]any{"secretName": "my-api-tls"},
				},
			}},
			check: checkAPIWithoutCertManager,
		},
	}
}

// quantities compares resource quantities by value.
var quantities = cmp.Comparer(func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 })

func checkAPI(t *testing.T, r *rendered) {
	ns, name := r.release.Namespace, r.apiName()

	// Exactly these API objects, told apart from the webhook's by their
	// component label.
	var got []string
	for _, o := range r.objs {
		if o.GetLabels()["app.kubernetes.io/component"] == "api" {
			got = append(got, o.GetKind()+"/"+o.GetNamespace()+"/"+o.GetName())
		}
	}
	want := []string{
		"APIService//" + apiServiceName,
		"Certificate/" + ns + "/" + name + "-tls",
		"ClusterRole//" + roleAdmin, "ClusterRole//" + roleDownloader, "ClusterRole//" + roleReader,
		"ClusterRoleBinding//" + name + "-auth-delegator",
		"ConfigMap/" + ns + "/" + name,
		"Deployment/" + ns + "/" + name,
		"NetworkPolicy/" + ns + "/" + name,
		"PodDisruptionBudget/" + ns + "/" + name,
		"RoleBinding/kube-system/" + name + "-auth-reader",
		"Service/" + ns + "/" + name,
		"ServiceAccount/" + ns + "/" + name,
	}
	slices.Sort(got)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("API objects (-want +got):\n%s", d)
	}

	// The configuration: the default destination first, each s3:// one with
	// the mounted directory of its Secret, file:// without credentials.
	wantConfig := apiConfig{
		Destinations: []apiDestination{
			{Name: "default", URL: "s3://heap-dumps/prod?endpoint=https://minio.example.com:9000&path-style=true", CredentialsDir: apiCredentialDir + "dumps-read"},
			{Name: "archive", URL: "s3://heap-archive/eu", CredentialsDir: apiCredentialDir + "dumps-read"},
			{Name: "team-b", URL: "s3://team-b-dumps", CredentialsDir: apiCredentialDir + "team-b-read"},
			{Name: "local", URL: "file:///var/dumps"},
		},
		Presign: apiPresign{Enabled: false, Expiry: "5m"},
	}
	if d := cmp.Diff(wantConfig, r.apiConfig(t)); d != "" {
		t.Errorf("API config (-want +got):\n%s", d)
	}

	d := r.apiDeployment(t)
	selector := map[string]string{"app.kubernetes.io/name": "dumpcatcher", "app.kubernetes.io/instance": r.release.Name, "app.kubernetes.io/component": "api"}
	if !cmp.Equal(d.Spec.Selector, &metav1.LabelSelector{MatchLabels: selector}) || !selects(selector, d.Spec.Template.Labels) {
		t.Errorf("selector %v, pod labels %v", d.Spec.Selector, d.Spec.Template.Labels)
	}
	// Neither Deployment's selector (nor so the Services') takes the other's pods.
	webhook := r.deployment(t)
	if selects(webhook.Spec.Selector.MatchLabels, d.Spec.Template.Labels) || selects(selector, webhook.Spec.Template.Labels) {
		t.Errorf("the webhook's selector %v and the API's %v overlap", webhook.Spec.Selector.MatchLabels, selector)
	}
	sum := sha256.Sum256([]byte(strings.TrimSuffix(r.apiConfigText(t), "\n")))
	if got := d.Spec.Template.Annotations["checksum/config"]; got != hex.EncodeToString(sum[:]) || d.Spec.Template.Annotations["example.com/team"] != "platform" {
		t.Errorf("pod annotations %v, want checksum/config %x and api.podAnnotations", d.Spec.Template.Annotations, sum)
	}
	if *d.Spec.Replicas != 2 || d.Spec.Strategy.RollingUpdate == nil || d.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("replicas %d strategy %+v: want 2, never one less during a rollout", *d.Spec.Replicas, d.Spec.Strategy)
	}

	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("https"), Scheme: corev1.URISchemeHTTPS}}}
	}
	ready, live := probe("/readyz"), probe("/livez")
	ready.PeriodSeconds, ready.TimeoutSeconds, ready.FailureThreshold = 5, 2, 3
	live.InitialDelaySeconds, live.PeriodSeconds, live.TimeoutSeconds, live.FailureThreshold = 10, 10, 2, 3
	wantContainer := corev1.Container{
		Name:            "api",
		Image:           "ghcr.io/dumpcatcher/dumpcatcher-webhook:" + chartAppVersion(t),
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         []string{"/usr/local/bin/dumpcatcher-api"},
		Args: []string{
			"--secure-port=6443",
			"--tls-cert-file=" + apiConfigDir + "/tls/tls.crt",
			"--tls-private-key-file=" + apiConfigDir + "/tls/tls.key",
			"--config=" + apiConfigDir + "/config.yaml",
			"--v=2",
		},
		Ports:          []corev1.ContainerPort{{Name: "https", ContainerPort: apiSecurePort, Protocol: corev1.ProtocolTCP}},
		ReadinessProbe: ready,
		LivenessProbe:  live,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
		},
		// The webhook's: Pod Security Standard "restricted".
		SecurityContext: webhook.Spec.Template.Spec.Containers[0].SecurityContext,
		VolumeMounts: []corev1.VolumeMount{
			{Name: "config", MountPath: apiConfigDir + "/config.yaml", SubPath: "config.yaml", ReadOnly: true},
			{Name: "tls", MountPath: apiConfigDir + "/tls", ReadOnly: true},
			{Name: "credentials-0", MountPath: apiCredentialDir + "dumps-read", ReadOnly: true},
			{Name: "credentials-1", MountPath: apiCredentialDir + "team-b-read", ReadOnly: true},
			{Name: "dumps", MountPath: "/var/dumps", ReadOnly: true},
		},
	}
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	if diff := cmp.Diff(wantContainer, pod.Containers[0], quantities); diff != "" {
		t.Errorf("API container (-want +got):\n%s", diff)
	}
	optional := true
	wantVolumes := []corev1.Volume{
		{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}}},
		{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: name + "-tls"}}},
		{Name: "credentials-0", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "dumps-read", Optional: &optional}}},
		{Name: "credentials-1", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "team-b-read", Optional: &optional}}},
		{Name: "dumps", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "dumps", ReadOnly: true}}},
	}
	if diff := cmp.Diff(wantVolumes, pod.Volumes); diff != "" {
		t.Errorf("API volumes (-want +got):\n%s", diff)
	}
	// Every credentialsDir of the configuration is a mounted Secret.
	mounts := map[string]string{}
	for _, m := range pod.Containers[0].VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	for _, dst := range r.apiConfig(t).Destinations {
		if dst.CredentialsDir != "" && mounts[dst.CredentialsDir] == "" {
			t.Errorf("destination %s: credentialsDir %s is not mounted", dst.Name, dst.CredentialsDir)
		}
	}
	if pod.ServiceAccountName != name || pod.ServiceAccountName == webhook.Spec.Template.Spec.ServiceAccountName {
		t.Errorf("serviceAccountName %q: want %q, not the webhook's", pod.ServiceAccountName, name)
	}
	if !cmp.Equal(pod.SecurityContext, webhook.Spec.Template.Spec.SecurityContext) || !cmp.Equal(pod.NodeSelector, map[string]string{"kubernetes.io/os": "linux"}) {
		t.Errorf("pod securityContext %+v nodeSelector %v", pod.SecurityContext, pod.NodeSelector)
	}
	wantSpread := []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &metav1.LabelSelector{MatchLabels: selector}}}
	if diff := cmp.Diff(wantSpread, pod.TopologySpreadConstraints); diff != "" {
		t.Errorf("topologySpreadConstraints (-want +got):\n%s", diff)
	}

	var svc corev1.Service
	render.Decode(t, render.Find(t, r.objs, "Service", name), &svc)
	wantSvc := corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Selector: selector, Ports: []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromString("https"), Protocol: corev1.ProtocolTCP}}}
	if diff := cmp.Diff(wantSvc, svc.Spec); diff != "" {
		t.Errorf("API Service (-want +got):\n%s", diff)
	}

	var pdb policyv1.PodDisruptionBudget
	render.Decode(t, render.Find(t, r.objs, "PodDisruptionBudget", name), &pdb)
	one := intstr.FromInt32(1)
	if diff := cmp.Diff(policyv1.PodDisruptionBudgetSpec{MinAvailable: &one, Selector: &metav1.LabelSelector{MatchLabels: selector}}, pdb.Spec); diff != "" {
		t.Errorf("API PodDisruptionBudget (-want +got):\n%s", diff)
	}

	// The API's NetworkPolicy lets networkPolicy.apiFrom reach the port the
	// Service and the probes use.
	var np networkingv1.NetworkPolicy
	render.Decode(t, render.Find(t, r.objs, "NetworkPolicy", name), &np)
	https, tcp := intstr.FromString("https"), corev1.ProtocolTCP
	wantNP := networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: selector},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{
			Ports: []networkingv1.NetworkPolicyPort{{Port: &https, Protocol: &tcp}},
			From:  []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}}},
		}},
	}
	if diff := cmp.Diff(wantNP, np.Spec); diff != "" {
		t.Errorf("API NetworkPolicy (-want +got):\n%s", diff)
	}

	// The APIService: the Service's port, the CA from cert-manager's injector.
	as := r.apiService(t)
	port := int32(443)
	wantSpec := apiServiceSpec{Group: dumpsGroup, Version: "v1alpha1", GroupPriorityMinimum: 1000, VersionPriority: 15, Service: &apiServiceRef{Namespace: ns, Name: name, Port: &port}}
	if diff := cmp.Diff(wantSpec, as.Spec); diff != "" {
		t.Errorf("APIService spec (-want +got):\n%s", diff)
	}
	if got := as.Annotations; !cmp.Equal(got, map[string]string{"cert-manager.io/inject-ca-from": ns + "/" + name + "-tls"}) {
		t.Errorf("APIService annotations %v", got)
	}
	serving := render.Find(t, r.objs, "Certificate", name+"-tls")
	if s := str(serving, "spec", "secretName"); s != name+"-tls" {
		t.Errorf("the API's Certificate writes %q, the pod mounts %q", s, name+"-tls")
	}
	if got, want := strs(serving, "spec", "dnsNames"), []string{name, name + "." + ns, name + "." + ns + ".svc", name + "." + ns + ".svc.cluster.local"}; !slices.Equal(got, want) {
		t.Errorf("dnsNames = %q, want %q", got, want)
	}
	// Issued by the release's CA Issuer, the one the webhook's certificate uses.
	caIssuer := render.Find(t, r.objs, "Issuer", str(serving, "spec", "issuerRef", "name"))
	if str(caIssuer, "spec", "ca", "secretName") != r.fullname+"-ca" {
		t.Errorf("the API's Certificate is issued by %s", caIssuer.GetName())
	}

	// RBAC: exactly these rules; only the admin role aggregates (into admin,
	// as the set asks), none into view.
	read := rbacv1.PolicyRule{APIGroups: []string{dumpsGroup}, Resources: []string{"dumps"}, Verbs: []string{"get", "list"}}
	download := rbacv1.PolicyRule{APIGroups: []string{dumpsGroup}, Resources: []string{"dumps/download", "dumps/presign"}, Verbs: []string{"get"}}
	readDelete := rbacv1.PolicyRule{APIGroups: []string{dumpsGroup}, Resources: []string{"dumps"}, Verbs: []string{"get", "list", "delete"}}
	wantRules := map[string][]rbacv1.PolicyRule{roleReader: {read}, roleDownloader: {read, download}, roleAdmin: {readDelete, download}}
	for role, rules := range wantRules {
		var cr rbacv1.ClusterRole
		render.Decode(t, render.Find(t, r.objs, "ClusterRole", role), &cr)
		if diff := cmp.Diff(rules, cr.Rules); diff != "" {
			t.Errorf("%s rules (-want +got):\n%s", role, diff)
		}
		aggregate := map[string]string{}
		for k, v := range cr.Labels {
			if strings.HasPrefix(k, "rbac.authorization.k8s.io/aggregate-to-") {
				aggregate[k] = v
			}
		}
		want := map[string]string{}
		if role == roleAdmin {
			want["rbac.authorization.k8s.io/aggregate-to-admin"] = "true"
		}
		if !cmp.Equal(want, aggregate) {
			t.Errorf("%s aggregation labels %v, want %v", role, aggregate, want)
		}
	}
	subjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}}
	var crb rbacv1.ClusterRoleBinding
	render.Decode(t, render.Find(t, r.objs, "ClusterRoleBinding", name+"-auth-delegator"), &crb)
	if diff := cmp.Diff(rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"}, crb.RoleRef); diff != "" || !cmp.Equal(subjects, crb.Subjects) {
		t.Errorf("auth-delegator binding %+v %+v", crb.RoleRef, crb.Subjects)
	}
	var rb rbacv1.RoleBinding
	render.Decode(t, render.Find(t, r.objs, "RoleBinding", name+"-auth-reader"), &rb)
	if diff := cmp.Diff(rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "extension-apiserver-authentication-reader"}, rb.RoleRef); diff != "" || !cmp.Equal(subjects, rb.Subjects) || rb.Namespace != "kube-system" {
		t.Errorf("auth-reader binding %s/%s %+v %+v", rb.Namespace, rb.Name, rb.RoleRef, rb.Subjects)
	}
}

func checkAPIWithoutCertManager(t *testing.T, r *rendered) {
	name := r.apiName()
	as := r.apiService(t)
	if string(as.Spec.CABundle) != string(testCA(t)) || len(as.Annotations) != 0 {
		t.Errorf("APIService caBundle %q annotations %v: want tls.caBundle's PEM, no injector", as.Spec.CABundle, as.Annotations)
	}
	d := r.apiDeployment(t)
	if got := volume(t, d, "tls").Secret.SecretName; got != "my-api-tls" {
		t.Errorf("tls volume Secret = %q, want my-api-tls", got)
	}
	// One file:// destination: no credentials, no default destination.
	want := apiConfig{Destinations: []apiDestination{{Name: "local", URL: "file:///var/dumps"}}, Presign: apiPresign{Enabled: true, Expiry: "10m"}}
	if diff := cmp.Diff(want, r.apiConfig(t)); diff != "" {
		t.Errorf("API config (-want +got):\n%s", diff)
	}
	if names := volumeNames(d); !slices.Equal(names, []string{"config", "tls"}) {
		t.Errorf("volumes %q: a file:// destination needs no credentials", names)
	}
	if *d.Spec.Replicas != 3 || d.Spec.Template.Spec.ServiceAccountName != "dumps-api" {
		t.Errorf("replicas %d serviceAccountName %q", *d.Spec.Replicas, d.Spec.Template.Spec.ServiceAccountName)
	}
	render.Find(t, r.objs, "ServiceAccount", "dumps-api")
	var pdb policyv1.PodDisruptionBudget
	render.Decode(t, render.Find(t, r.objs, "PodDisruptionBudget", name), &pdb)
	if pdb.Spec.MinAvailable != nil || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("pdb %+v", pdb.Spec)
	}

	// api.tls.caBundle, PEM or base64, wins over tls.caBundle.
	other := newTestCA(t, "dumpcatcher-api-test-ca")
	for _, ca := range []string{string(other), base64.StdEncoding.EncodeToString(other)} {
		rel := r.release
		rel.Values = map[string]any{
			"certManager": map[string]any{"enabled": false},
			"tls":         map[string]any{"secretName": "my-webhook-tls", "caBundle": string(testCA(t))},
			"config":      map[string]any{"destination": "s3://heap-dumps"},
			"api":         map[string]any{"enabled": true, "tls": map[string]any{"secretName": "my-api-tls", "caBundle": ca}},
		}
		r2 := &rendered{release: rel, objs: render.Objects(t, rel.Template(t)), fullname: r.fullname}
		if got := r2.apiService(t).Spec.CABundle; string(got) != string(other) {
			t.Errorf("api.tls.caBundle %.20q: caBundle = %q, want its PEM", ca, got)
		}
		if got := r2.webhook(t).Webhooks[0].ClientConfig.CABundle; string(got) != string(testCA(t)) {
			t.Errorf("the webhook's caBundle changed with api.tls.caBundle: %q", got)
		}
	}
}

func volumeNames(d *appsv1.Deployment) []string {
	var names []string
	for _, v := range d.Spec.Template.Spec.Volumes {
		names = append(names, v.Name)
	}
	return names
}

// TestAPIOffByDefault: without api.enabled the chart renders nothing of the
// API, whatever else api.* says.
func TestAPIOffByDefault(t *testing.T) {
	values := apiValues()
	values["api"].(map[string]any)["enabled"] = false
	r := renderSet(t, valueSet{release: render.Release{Values: values}})
	for _, o := range r.objs {
		if o.GetLabels()["app.kubernetes.io/component"] != "webhook" || strings.Contains(o.GetName(), "dumps") || o.GetKind() == "APIService" {
			t.Errorf("%s %s rendered with api.enabled=false", o.GetKind(), o.GetName())
		}
	}
}

// TestConfigChangeRollsTheAPI: the API's checksum follows its config.yaml,
// and the API's values leave the webhook's alone.
func TestConfigChangeRollsTheAPI(t *testing.T) {
	checksums := func(change func(v map[string]any)) (api, webhook string) {
		v := apiValues()
		if change != nil {
			change(v)
		}
		r := renderSet(t, valueSet{release: render.Release{Values: v}})
		return r.apiDeployment(t).Spec.Template.Annotations["checksum/config"], r.deployment(t).Spec.Template.Annotations["checksum/config"]
	}
	api := func(v map[string]any) map[string]any { return v["api"].(map[string]any) }
	baseAPI, baseWebhook := checksums(nil)
	for _, tc := range []struct {
		name   string
		change func(v map[string]any)
		rolls  bool
	}{
		{"presign expiry", func(v map[string]any) { api(v)["presign"] = map[string]any{"expiry": "1m"} }, true},
		{"credentials Secret", func(v map[string]any) { api(v)["credentialsSecret"] = "other" }, true},
		{"one destination less", func(v map[string]any) { api(v)["destinations"] = api(v)["destinations"].([]any)[1:] }, true},
		{"default destination", func(v map[string]any) { v["config"] = map[string]any{"destination": "s3://elsewhere"} }, true},
		{"replicas and args", func(v map[string]any) { api(v)["replicaCount"] = 4; api(v)["extraArgs"] = []any{"--v=4"} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gotAPI, gotWebhook := checksums(tc.change)
			if (gotAPI != baseAPI) != tc.rolls {
				t.Errorf("API checksum changed: %v, want %v", gotAPI != baseAPI, tc.rolls)
			}
			if gotWebhook != baseWebhook && tc.name != "default destination" {
				t.Error("an API value changed the webhook's checksum")
			}
		})
	}
}

// TestDumpsRoleBindingExample: deploy/examples/dumps-rolebinding.yaml binds
// a ClusterRole the chart ships, with no namespace of its own (kubectl -n
// decides).
func TestDumpsRoleBindingExample(t *testing.T) {
	objs := decodeFile(t, filepath.Join(render.RepoRoot(t), "deploy", "examples", "dumps-rolebinding.yaml"))
	if len(objs) != 1 || objs[0].GetKind() != "RoleBinding" || objs[0].GetNamespace() != "" {
		t.Fatal("dumps-rolebinding.yaml: want one RoleBinding without a namespace")
	}
	var rb rbacv1.RoleBinding
	render.Decode(t, objs[0], &rb)
	r := renderSet(t, valueSet{release: render.Release{Values: apiValues()}})
	render.Find(t, r.objs, "ClusterRole", rb.RoleRef.Name)
	if rb.RoleRef.Kind != "ClusterRole" || rb.RoleRef.Name != roleDownloader || len(rb.Subjects) == 0 {
		t.Errorf("roleRef %+v subjects %+v: want %s", rb.RoleRef, rb.Subjects, roleDownloader)
	}
}

// allowedFor asks the API server's authorizer whether the user may do it.
func (c *cluster) allowedFor(t *testing.T, user string, groups []string, ra authorizationv1.ResourceAttributes) bool {
	t.Helper()
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: append(groups, "system:authenticated"), ResourceAttributes: &ra}}
	got, err := c.client.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), sar, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got.Status.Allowed
}

// checkAPIOnServer runs after a set with api.enabled was applied: the API
// pod passes "restricted", the server's ServiceAccount may delegate authn
// and authz and nothing more, and users bound to the three ClusterRoles (one
// through deploy/examples/dumps-rolebinding.yaml) may do exactly what their
// role says in their namespace and nothing elsewhere. Then the cluster-wide
// API objects go, for the next set and for helm.
func checkAPIOnServer(t *testing.T, c *cluster, r *rendered) {
	ctx := context.Background()
	ns := r.release.Namespace
	t.Cleanup(func() {
		if err := c.dynamic.Resource(schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}).Delete(ctx, apiServiceName, metav1.DeleteOptions{}); err != nil {
			t.Error(err)
		}
		for _, role := range dumpsRoles {
			if err := c.client.RbacV1().ClusterRoles().Delete(ctx, role, metav1.DeleteOptions{}); err != nil {
				t.Error(err)
			}
		}
	})

	d := r.apiDeployment(t)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "api-", Namespace: ns, Labels: d.Spec.Template.Labels}, Spec: d.Spec.Template.Spec}
	if _, err := c.client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("the API pod is rejected in a restricted namespace: %v", err)
	}
	if w := c.warnings.Take(); len(w) > 0 {
		t.Errorf("warnings for the API pod: %q", w)
	}

	// The stored APIService is what the chart says.
	stored, err := c.dynamic.Resource(schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}).Get(ctx, apiServiceName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	delete(stored.Object, "status") // the aggregator's availability
	var got apiService
	render.Decode(t, stored, &got)
	if diff := cmp.Diff(r.apiService(t).Spec, got.Spec); diff != "" {
		t.Errorf("stored APIService spec (-rendered +stored):\n%s", diff)
	}

	sa := d.Spec.Template.Spec.ServiceAccountName
	saUser, saGroups := "system:serviceaccount:"+ns+":"+sa, []string{"system:serviceaccounts", "system:serviceaccounts:" + ns}
	// The RBAC authorizer sees the chart's new bindings through a watch.
	tokenReviews := authorizationv1.ResourceAttributes{Verb: "create", Group: "authentication.k8s.io", Resource: "tokenreviews"}
	for deadline := time.Now().Add(30 * time.Second); !c.allowedFor(t, saUser, saGroups, tokenReviews); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the API server's ServiceAccount may still not create tokenreviews 30 s after the chart was applied")
		}
	}
	for _, a := range []struct {
		ra   authorizationv1.ResourceAttributes
		want bool
	}{
		{authorizationv1.ResourceAttributes{Verb: "create", Group: "authentication.k8s.io", Resource: "tokenreviews"}, true},
		{authorizationv1.ResourceAttributes{Verb: "create", Group: "authorization.k8s.io", Resource: "subjectaccessreviews"}, true},
		{authorizationv1.ResourceAttributes{Verb: "get", Resource: "configmaps", Namespace: "kube-system", Name: "extension-apiserver-authentication"}, true},
		{authorizationv1.ResourceAttributes{Verb: "watch", Resource: "configmaps", Namespace: "kube-system", Name: "extension-apiserver-authentication"}, true},
		{authorizationv1.ResourceAttributes{Verb: "get", Resource: "secrets", Namespace: ns}, false},
		{authorizationv1.ResourceAttributes{Verb: "list", Resource: "secrets"}, false},
		{authorizationv1.ResourceAttributes{Verb: "get", Resource: "secrets", Namespace: "kube-system"}, false},
		{authorizationv1.ResourceAttributes{Verb: "get", Resource: "configmaps", Namespace: ns}, false},
		{authorizationv1.ResourceAttributes{Verb: "list", Resource: "pods"}, false},
		{authorizationv1.ResourceAttributes{Verb: "list", Group: dumpsGroup, Resource: "dumps"}, false},
	} {
		if got := c.allowedFor(t, saUser, saGroups, a.ra); got != a.want {
			t.Errorf("the API server's ServiceAccount may %s %s/%s in %q (%s): %v, want %v", a.ra.Verb, a.ra.Group, a.ra.Resource, a.ra.Namespace, a.ra.Name, got, a.want)
		}
	}

	// Users: jane through the example RoleBinding (downloader), rita a
	// reader, adam an admin, all in one namespace.
	dev, other := ns+"-dev", ns+"-other"
	c.namespace(t, dev, nil)
	c.namespace(t, other, nil)
	example := decodeFile(t, filepath.Join(render.RepoRoot(t), "deploy", "examples", "dumps-rolebinding.yaml"))
	example[0].SetNamespace(dev)
	c.apply(t, example)
	for user, role := range map[string]string{"rita": roleReader, "adam": roleAdmin} {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "dumps-" + user, Namespace: dev},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		}
		if _, err := c.client.RbacV1().RoleBindings(dev).Create(ctx, rb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	// The RBAC authorizer sees new RoleBindings through a watch: wait (up to
	// 30 s) until every bound user may list dumps in dev before asking what
	// each may do (seen once: rita's binding not yet seen right after its
	// create).
	for _, user := range []string{"jane@example.com", "rita", "adam"} {
		ra := authorizationv1.ResourceAttributes{Verb: "list", Group: dumpsGroup, Version: "v1alpha1", Resource: "dumps", Namespace: dev}
		for deadline := time.Now().Add(30 * time.Second); !c.allowedFor(t, user, nil, ra); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s may still not list dumps in %q 30 s after the RoleBinding was made", user, dev)
			}
		}
	}
	type action struct{ verb, subresource string }
	actions := []action{{"get", ""}, {"list", ""}, {"get", "download"}, {"get", "presign"}, {"delete", ""}, {"watch", ""}, {"create", ""}, {"update", ""}, {"deletecollection", ""}}
	may := map[string][]action{
		"jane@example.com": {{"get", ""}, {"list", ""}, {"get", "download"}, {"get", "presign"}},
		"rita":             {{"get", ""}, {"list", ""}},
		"adam":             {{"get", ""}, {"list", ""}, {"get", "download"}, {"get", "presign"}, {"delete", ""}},
		"nobody":           nil,
	}
	for user, allowed := range may {
		for _, a := range actions {
			for _, namespace := range []string{dev, other, ""} {
				want := namespace == dev && slices.Contains(allowed, a)
				ra := authorizationv1.ResourceAttributes{Verb: a.verb, Group: dumpsGroup, Version: "v1alpha1", Resource: "dumps", Subresource: a.subresource, Namespace: namespace, Name: "d-1234567890"}
				if a.verb == "list" || a.verb == "watch" || a.verb == "create" || a.verb == "deletecollection" {
					ra.Name = ""
				}
				if got := c.allowedFor(t, user, nil, ra); got != want {
					t.Errorf("%s may %s dumps/%s in %q: %v, want %v", user, a.verb, a.subresource, namespace, got, want)
				}
			}
		}
	}
}

// helmInstallAPI installs the chart with the API through helm itself: the
// notes say how to bind a developer, and a second release with the API is
// refused (the APIService and the ClusterRoles exist once per cluster).
func helmInstallAPI(t *testing.T, c *cluster) {
	if !c.crds {
		t.Skip("needs the cert-manager CRDs")
	}
	ctx := context.Background()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, c.api.Env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	values := filepath.Join(t.TempDir(), "api.yaml")
	if err := os.WriteFile(values, []byte("api:\n  enabled: true\n  credentialsSecret: dumps-read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	minio := filepath.Join(render.RepoRoot(t), "deploy", "examples", "values-minio.yaml")
	install := func(name string) (string, error) {
		return render.Run(t, "install", name, render.ChartDir(t), "--namespace", name, "--create-namespace", "--kubeconfig", kubeconfig, "--timeout", "60s", "-f", minio, "-f", values)
	}
	t.Cleanup(func() {
		_ = c.dynamic.Resource(schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}).Delete(ctx, apiServiceName, metav1.DeleteOptions{})
		for _, name := range []string{"notes-api", "notes-api-2"} {
			_ = c.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, name+"-dumpcatcher", metav1.DeleteOptions{})
		}
	})
	out, err := install("notes-api")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, w := range []string{
		"The dumps API (dumps.dumpcatcher.io/v1alpha1) is served by deployment/notes-api-dumpcatcher-api",
		"kubectl -n notes-api rollout status deployment/notes-api-dumpcatcher-api",
		"It lists the destinations: default (s3://heap-dumps/demo?endpoint=http://minio.minio.svc:9000&path-style=true).",
		"kubectl -n NAMESPACE create rolebinding dumps-USER --clusterrole=dumpcatcher-dumps-downloader --user=USER",
		"kubectl dumpcatcher list -n NAMESPACE",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("NOTES lack %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "WARNING") {
		t.Errorf("NOTES warn with the default key template:\n%s", out)
	}
	if _, err := c.client.AppsV1().Deployments("notes-api").Get(ctx, "notes-api-dumpcatcher-api", metav1.GetOptions{}); err != nil {
		t.Errorf("after helm install: %v", err)
	}
	out, err = install("notes-api-2")
	if err == nil || !strings.Contains(err.Error(), "exists and cannot be imported into the current release") {
		t.Errorf("a second release with the API: %v\n%s", err, out)
	}
}

// TestAPINamesWithLongFullname: with a 63-character full name the API's
// objects still have valid names (a Service name is at most 63 characters)
// and never the webhook's.
func TestAPINamesWithLongFullname(t *testing.T) {
	values := apiValues()
	values["fullnameOverride"] = sixtyFour("a")[:63]
	r := renderSet(t, valueSet{release: render.Release{Values: values}})
	want := sixtyFour("a")[:59] + "-api"
	if got := r.apiDeployment(t).Name; got != want {
		t.Errorf("API Deployment %q, want %q", got, want)
	}
	for _, o := range r.objs {
		if o.GetLabels()["app.kubernetes.io/component"] == "api" && o.GetKind() == "Service" && (len(o.GetName()) > 63 || o.GetName() == r.fullname) {
			t.Errorf("API Service name %q", o.GetName())
		}
	}
}
