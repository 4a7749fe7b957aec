package miniotest_test

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/dumpcatcher/dumpcatcher/sidecar/storage/miniotest"
)

// TestStopStart: a stopped server refuses connections, and a restarted one
// serves the same objects on the same address.
func TestStopStart(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{})
	if !strings.HasPrefix(srv.Endpoint, "http://127.0.0.1:") {
		t.Fatalf("endpoint %s is not on 127.0.0.1", srv.Endpoint)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := srv.Client(t)
	if _, err := c.PutObject(ctx, srv.Bucket, "k", strings.NewReader("v"), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if srv.Running() {
		t.Fatal("running after Stop")
	}
	if conn, err := net.DialTimeout("tcp", srv.Addr, time.Second); err == nil {
		conn.Close()
		t.Fatal("a stopped server accepts connections")
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	start := time.Now()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart took %v", time.Since(start).Round(time.Millisecond))
	if srv.Addr != addr {
		t.Fatalf("address changed from %s to %s", addr, srv.Addr)
	}
	obj, err := c.GetObject(ctx, srv.Bucket, "k", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	if b, err := io.ReadAll(obj); err != nil || string(b) != "v" {
		t.Fatalf("after restart: %q, %v", b, err)
	}
	if err := srv.Start(); err == nil {
		t.Fatal("Start of a running server succeeded")
	}
}

func TestURL(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{Bucket: "other-bucket"})
	want := "s3://other-bucket/a/b?endpoint=" + strings.ReplaceAll(strings.ReplaceAll(srv.Endpoint, ":", "%3A"), "/", "%2F") + "&path-style=true&region=us-east-1"
	if got := srv.URL("a/b"); got != want {
		t.Fatalf("URL = %s, want %s", got, want)
	}
}
