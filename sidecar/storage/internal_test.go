package storage

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestMultipartETag(t *testing.T) {
	// Two parts "a" and "b": md5(md5("a") || md5("b")) + "-2", as S3 computes it.
	a, b := md5.Sum([]byte("a")), md5.Sum([]byte("b"))
	want := md5.Sum(append(a[:], b[:]...))
	got := multipartETag([][md5.Size]byte{a, b})
	if got != hex.EncodeToString(want[:])+"-2" {
		t.Fatalf("multipartETag = %s", got)
	}
}

func TestMD5LikeETag(t *testing.T) {
	for etag, want := range map[string]bool{
		"d41d8cd98f00b204e9800998ecf8427e":     true,
		"d41d8cd98f00b204e9800998ecf8427e-12":  true,
		"d41d8cd98f00b204e9800998ecf8427e-":    false,
		"d41d8cd98f00b204e9800998ecf8427e-1a":  false,
		"D41D8CD98F00B204E9800998ECF8427E":     false, // verify lower-cases first
		"d41d8cd98f00b204e9800998ecf8427":      false,
		"w/\"d41d8cd98f00b204e9800998ecf8427e": false,
		"":                                     false,
	} {
		if got := md5LikeETag(etag); got != want {
			t.Errorf("md5LikeETag(%q) = %v, want %v", etag, got, want)
		}
	}
}

func TestValidateKey(t *testing.T) {
	for _, k := range []string{"a", "ns/pod/2026-01-02T03:04:05Z.hprof.gz", "a b/c+d@e", "ünïcode/k", "..a/b..", ".hidden"} {
		if err := ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q) = %v", k, err)
		}
	}
	for _, k := range []string{"", "/a", "a/", "a//b", ".", "..", "a/../b", "./a", "a\\b", "a\x00", "a\x7f", "\xff", strings.Repeat("k", 901)} {
		if err := ValidateKey(k); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey", k, err)
		}
	}
}

func TestCheckMetadata(t *testing.T) {
	in := map[string]string{"pod": "p", MetaSHA256: strings.Repeat("a", 64)}
	out, want, err := checkMetadata(in)
	if err != nil || want != strings.Repeat("a", 64) || len(out) != 1 || out["pod"] != "p" {
		t.Fatalf("checkMetadata = %v, %q, %v", out, want, err)
	}
	out["x"] = "y"
	if len(in) != 2 {
		t.Fatal("checkMetadata returned the caller's map")
	}
	// The 2 KiB limit counts the sha256 Put adds.
	if _, _, err := checkMetadata(map[string]string{"k": strings.Repeat("v", 2048-1-6-64)}); err != nil {
		t.Errorf("metadata at the limit: %v", err)
	}
	if _, _, err := checkMetadata(map[string]string{"k": strings.Repeat("v", 2048-1-6-64+1)}); !errors.Is(err, ErrInvalidMetadata) {
		t.Errorf("metadata over the limit: %v", err)
	}
}

func TestCredentialsFromDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, value string) {
		t.Helper()
		tmp := filepath.Join(dir, ".tmp")
		if err := os.WriteFile(tmp, []byte(value), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	creds := CredentialsFromDir(dir)
	_, err := creds.GetWithContext(nil)
	if err == nil || !strings.Contains(err.Error(), "accessKeyID") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("empty dir: %v", err)
	}
	write("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE\n")
	write("AWS_SECRET_ACCESS_KEY", "  s3cr3t-aws\n")
	v, err := creds.GetWithContext(nil)
	if err != nil || v.AccessKeyID != "AKIAEXAMPLE" || v.SecretAccessKey != "s3cr3t-aws" || v.SessionToken != "" {
		t.Fatalf("AWS-style files: %+v, %v", v, err)
	}
	if creds.IsExpired() {
		t.Fatal("expired although nothing changed")
	}
	// The Secret's own names win, and a change is noticed.
	write("accessKeyID", "minio-user")
	write("secretAccessKey", "minio-secret")
	write("sessionToken", "tok")
	if !creds.IsExpired() {
		t.Fatal("not expired after the files changed")
	}
	v, err = creds.GetWithContext(nil)
	if err != nil || v.AccessKeyID != "minio-user" || v.SecretAccessKey != "minio-secret" || v.SessionToken != "tok" {
		t.Fatalf("after rotation: %+v, %v", v, err)
	}
	write("secretAccessKey", "   \n")
	_, err = creds.GetWithContext(nil)
	if err == nil || !strings.Contains(err.Error(), "secretAccessKey is empty") {
		t.Fatalf("empty secret file: %v", err)
	}
}

func TestBufPoolBoundsBuffers(t *testing.T) {
	p := newBufPool(1024, 2)
	ctx := context.Background()
	var inUse, peak atomic.Int32
	var allocated sync.Map
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				b, err := p.get(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				allocated.Store(&b[0], true)
				n := inUse.Add(1)
				for {
					old := peak.Load()
					if n <= old || peak.CompareAndSwap(old, n) {
						break
					}
				}
				time.Sleep(10 * time.Microsecond)
				inUse.Add(-1)
				p.put(b)
			}
		}()
	}
	wg.Wait()
	count := 0
	allocated.Range(func(any, any) bool { count++; return true })
	if peak.Load() > 2 || count > 2 {
		t.Fatalf("peak %d buffers in use, %d allocated; want at most 2", peak.Load(), count)
	}
	// A full pool honours cancellation.
	b1, _ := p.get(ctx)
	b2, _ := p.get(ctx)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := p.get(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("get on an exhausted pool: %v", err)
	}
	p.put(b1)
	p.put(b2)
	p.release()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) != 0 {
		t.Fatal("idle buffers not released")
	}
}
