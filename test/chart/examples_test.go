package chart

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/realpart"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/miniotest"
	"github.com/dumpcatcher/dumpcatcher/test/chart/render"
	"github.com/dumpcatcher/dumpcatcher/webhook/config"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// examples are the objects of deploy/examples that fit together: the MinIO,
// its setup Job, the uploader's credentials and the chart values.
type examples struct {
	root        *corev1.Secret // minio-root
	job         *batchv1.Job   // minio-setup
	credentials *corev1.Secret // credentials-secret.yaml
	values      config.Config  // values-minio.yaml as the chart renders it
	service     *corev1.Service
}

func loadExamples(t *testing.T) examples {
	t.Helper()
	dir := filepath.Join(render.RepoRoot(t), "deploy", "examples")
	var ex examples
	for _, o := range decodeFile(t, filepath.Join(dir, "minio.yaml")) {
		switch o.GetKind() + "/" + o.GetName() {
		case "Secret/minio-root":
			ex.root = &corev1.Secret{}
			render.Decode(t, o, ex.root)
		case "Job/minio-setup":
			ex.job = &batchv1.Job{}
			render.Decode(t, o, ex.job)
		case "Service/minio":
			ex.service = &corev1.Service{}
			render.Decode(t, o, ex.service)
		}
		if ns := o.GetNamespace(); o.GetKind() != "Namespace" && ns != "minio" {
			t.Errorf("minio.yaml: %s %s in namespace %q, want minio", o.GetKind(), o.GetName(), ns)
		}
	}
	if ex.root == nil || ex.job == nil || ex.service == nil {
		t.Fatal("minio.yaml lacks the Secret minio-root, the Service minio or the Job minio-setup")
	}
	creds := decodeFile(t, filepath.Join(dir, "credentials-secret.yaml"))
	if len(creds) != 1 || creds[0].GetKind() != "Secret" || creds[0].GetNamespace() != "" {
		t.Fatal("credentials-secret.yaml: want one Secret without a namespace (applied into each app namespace)")
	}
	ex.credentials = &corev1.Secret{}
	render.Decode(t, creds[0], ex.credentials)
	r := renderSet(t, valueSet{release: render.Release{ValuesFiles: []string{filepath.Join(dir, "values-minio.yaml")}}})
	ex.values = r.config(t)
	return ex
}

// TestExamplesFitTogether checks, without a cluster, that the examples
// name each other correctly.
func TestExamplesFitTogether(t *testing.T) {
	ex := loadExamples(t)
	if ex.values.CredentialsSecret != ex.credentials.Name {
		t.Errorf("values-minio.yaml credentialsSecret %q, but credentials-secret.yaml is %q", ex.values.CredentialsSecret, ex.credentials.Name)
	}
	for _, k := range []string{storage.FileAccessKeyID, storage.FileSecretAccessKey} {
		if ex.credentials.StringData[k] == "" {
			t.Errorf("credentials-secret.yaml has no %s", k)
		}
	}
	if ex.credentials.StringData[storage.FileAccessKeyID] != ex.root.StringData["UPLOAD_USER"] ||
		ex.credentials.StringData[storage.FileSecretAccessKey] != ex.root.StringData["UPLOAD_PASSWORD"] {
		t.Error("credentials-secret.yaml is not the user the MinIO setup Job creates")
	}
	d, err := contract.ParseDestination(ex.values.Destination)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(d.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	if u.Hostname() != ex.service.Name+"."+ex.service.Namespace+".svc" || u.Port() != "9000" || !d.PathStyle {
		t.Errorf("destination endpoint %s is not the Service %s/%s port 9000 (path-style)", d.Endpoint, ex.service.Namespace, ex.service.Name)
	}
	if !strings.Contains(setupScript(t, ex), "local/"+d.Bucket) {
		t.Errorf("the setup Job does not create the bucket %q", d.Bucket)
	}
	// The webhook's own example configuration says the same.
	wc, err := config.Load(filepath.Join(render.RepoRoot(t), "deploy", "examples", "webhook-config.yaml"), "x")
	if err != nil {
		t.Fatal(err)
	}
	if wc.Destination != ex.values.Destination || wc.CredentialsSecret != ex.values.CredentialsSecret {
		t.Errorf("webhook-config.yaml (%s, %s) and values-minio.yaml (%s, %s) differ", wc.Destination, wc.CredentialsSecret, ex.values.Destination, ex.values.CredentialsSecret)
	}
}

func setupScript(t *testing.T, ex examples) string {
	t.Helper()
	c := ex.job.Spec.Template.Spec.Containers
	if len(c) != 1 || len(c[0].Args) != 1 || !slices.Equal(c[0].Command, []string{"/bin/sh", "-ec"}) {
		t.Fatalf("the setup Job is not one /bin/sh -ec script: %+v", c)
	}
	return c[0].Args[0]
}

// TestMinioExampleSetup runs the setup Job's script with the real mc against
// a real MinIO with the example's root user, twice (it must be safe to run
// again), then uploads with the project's S3 backend as the user it created,
// with the example credentials: a multipart upload with tagging, a check and
// the delete of a failed verification must all be allowed; another bucket
// must not be.
func TestMinioExampleSetup(t *testing.T) {
	ex := loadExamples(t)
	mc := realpart.Tool(t, "mc")
	srv := miniotest.Start(t, miniotest.Options{Bucket: "unrelated", AccessKey: ex.root.StringData["MINIO_ROOT_USER"], SecretKey: ex.root.StringData["MINIO_ROOT_PASSWORD"]})

	tmp := t.TempDir()
	script := strings.ReplaceAll(setupScript(t, ex), "http://minio.minio.svc:9000", srv.Endpoint)
	script = strings.ReplaceAll(script, "/tmp/", tmp+"/")
	env := []string{"PATH=" + filepath.Dir(mc) + ":/usr/bin:/bin", "HOME=" + tmp}
	for k, v := range ex.root.StringData {
		env = append(env, k+"="+v)
	}
	for run := 1; run <= 2; run++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, "/bin/sh", "-ec", script)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("setup script, run %d: %v\n%s", run, err, out)
		}
		if !strings.Contains(string(out), "bucket heap-dumps and user dumpcatcher ready") {
			t.Fatalf("setup script, run %d:\n%s", run, out)
		}
	}

	credDir := t.TempDir()
	for k, v := range ex.credentials.StringData {
		if err := os.WriteFile(filepath.Join(credDir, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	local := strings.ReplaceAll(ex.values.Destination, "http://minio.minio.svc:9000", srv.Endpoint)
	d, err := contract.ParseDestination(local)
	if err != nil {
		t.Fatal(err)
	}
	b, err := storage.Open(d, storage.Options{CredentialsDir: credDir, PartSize: storage.MinPartSize, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := make([]byte, 2*storage.MinPartSize+123) // three parts
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{1000, len(data)} {
		key := "ns/deployment-app/pod/app/dump-" + time.Now().UTC().Format("150405.000") + ".hprof"
		info, err := b.Put(ctx, key, bytes.NewReader(data[:size]), storage.PutOptions{Metadata: map[string]string{"reason": "oom"}})
		if err != nil {
			t.Fatalf("upload of %d bytes as the example user: %v", size, err)
		}
		if info.Size != int64(size) {
			t.Errorf("stored %d bytes, sent %d", info.Size, size)
		}
		rc, err := b.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data[:size]) {
			t.Fatalf("read back %d bytes: %v", len(got), err)
		}
		if err := b.Delete(ctx, key); err != nil {
			t.Errorf("delete as the example user: %v", err)
		}
	}
	// The user is confined to its bucket.
	other := strings.Replace(local, "s3://heap-dumps/", "s3://unrelated/", 1)
	od, err := contract.ParseDestination(other)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := storage.Open(od, storage.Options{CredentialsDir: credDir, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ob.Put(ctx, "x", strings.NewReader("x"), storage.PutOptions{}); err == nil {
		t.Error("the example user may write to another bucket")
	}
}
