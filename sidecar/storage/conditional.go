package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"syscall"

	"github.com/minio/minio-go/v7"
)

// Conditional is what a lock needs from a store: small objects that are
// written only when the object is still the version the writer last read.
// Both backends implement it; the conformance suite checks it.
type Conditional interface {
	// ReadVersion returns the object at key (at most MaxConditionalSize
	// bytes) and its version, an opaque token; ErrNotExist (errors.Is) when
	// there is none.
	ReadVersion(ctx context.Context, key string) (data []byte, version string, err error)
	// WriteIf stores data at key only when the object there is still at
	// version, or, with version "", only when there is no object at key. It
	// returns the new version, or ErrPrecondition (errors.Is) when the
	// condition does not hold, and ErrNotSupported when the store cannot
	// write conditionally.
	//
	// On S3 the version is the ETag, a hash of the content: a write of the
	// bytes already there leaves the version as it was, and a second writer
	// holding that version succeeds too. Callers that need every write to
	// be a new version make each one's data unique (dumplock's carry a random
	// token).
	WriteIf(ctx context.Context, key string, data []byte, version string) (newVersion string, err error)
}

// MaxConditionalSize bounds the objects of Conditional.
const MaxConditionalSize = 64 << 10

// ErrPrecondition is returned (wrapped) by WriteIf when the object is not
// at the version the caller named.
var ErrPrecondition = errors.New("precondition failed: the object changed")

// ErrNotSupported is returned (wrapped) by WriteIf when the store does not
// implement conditional writes.
var ErrNotSupported = errors.New("the store does not support conditional writes (If-None-Match / If-Match on PUT)")

var (
	_ Conditional = (*S3)(nil)
	_ Conditional = (*Filesystem)(nil)
)

func checkConditionalSize(url string, n int) error {
	if n > MaxConditionalSize {
		return fmt.Errorf("conditional write %s: %d bytes, at most %d", url, n, MaxConditionalSize)
	}
	return nil
}

// ReadVersion gets the object; its version is its ETag.
func (b *S3) ReadVersion(ctx context.Context, key string) ([]byte, string, error) {
	if err := ValidateKey(key); err != nil {
		return nil, "", err
	}
	rc, oi, _, err := b.core.GetObject(ctx, b.bucket, b.object(key), minio.GetObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			return nil, "", fmt.Errorf("s3 get %s: %w", b.URL(key), ErrNotExist)
		}
		return nil, "", b.fail("get", key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, MaxConditionalSize+1))
	if err != nil {
		return nil, "", b.fail("get", key, err)
	}
	if err := checkConditionalSize(b.URL(key), len(data)); err != nil {
		return nil, "", err
	}
	return data, oi.ETag, nil
}

// WriteIf is a single PUT with If-None-Match: * (version "") or
// If-Match: "<etag>", which AWS S3 (since 2024), MinIO and Ceph RGW honour.
func (b *S3) WriteIf(ctx context.Context, key string, data []byte, version string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	if err := checkConditionalSize(b.URL(key), len(data)); err != nil {
		return "", err
	}
	opts := minio.PutObjectOptions{ContentType: "application/json", DisableMultipart: true, SendContentMd5: true}
	if version == "" {
		opts.SetMatchETagExcept("*")
	} else {
		opts.SetMatchETag(version)
	}
	ui, err := b.client.PutObject(ctx, b.bucket, b.object(key), bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		var er minio.ErrorResponse
		if errors.As(err, &er) {
			switch {
			case er.StatusCode == http.StatusPreconditionFailed || er.Code == minio.PreconditionFailed,
				// AWS: another conditional write to the key is in flight.
				er.StatusCode == http.StatusConflict && er.Code == "ConditionalRequestConflict",
				// If-Match on a key that is gone.
				version != "" && isNotFound(err):
				return "", fmt.Errorf("s3 conditional put %s: %w", b.URL(key), ErrPrecondition)
			case er.StatusCode == http.StatusNotImplemented || er.Code == minio.NotImplemented:
				return "", fmt.Errorf("s3 conditional put %s (endpoint %s): %w", b.URL(key), b.endpoint, ErrNotSupported)
			}
		}
		return "", b.fail("conditional put", key, err)
	}
	return ui.ETag, nil
}

// ReadVersion reads the file under a shared flock(2) of its directory (see
// WriteIf). Its version is the token WriteIf recorded in the metadata file;
// a file written by Put has the version "sha256:<hex>".
func (f *Filesystem) ReadVersion(ctx context.Context, key string) ([]byte, string, error) {
	root, err := f.open(ctx, "read", key)
	if err != nil {
		return nil, "", err
	}
	defer root.Close()
	unlock, err := f.flockDir(root, key, syscall.LOCK_SH, false)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, "", fmt.Errorf("file read %s: %w", f.URL(key), ErrNotExist)
	}
	if err != nil {
		return nil, "", err
	}
	defer unlock()
	return f.readVersion(root, key)
}

func (f *Filesystem) readVersion(root *os.Root, key string) ([]byte, string, error) {
	if _, err := f.regular(root, "read", key); err != nil {
		return nil, "", err
	}
	file, err := root.Open(key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", fmt.Errorf("file read %s: %w", f.URL(key), ErrNotExist)
	}
	if err != nil {
		return nil, "", fmt.Errorf("file read %s: %w", f.URL(key), err)
	}
	defer file.Close()
	data, err := io.ReadAll(io.LimitReader(file, MaxConditionalSize+1))
	if err != nil {
		return nil, "", fmt.Errorf("file read %s: %w", f.URL(key), err)
	}
	if err := checkConditionalSize(f.URL(key), len(data)); err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(data)
	version := "sha256:" + hex.EncodeToString(sum[:])
	if js, err := root.ReadFile(key + metaSuffix); err == nil {
		var fm fileMeta
		if json.Unmarshal(js, &fm) == nil && fm.Version != "" && fm.Size == int64(len(data)) && fm.SHA256 == hex.EncodeToString(sum[:]) {
			version = fm.Version
		}
	}
	return data, version, nil
}

// flockDir locks the directory of key (creating it when create is set) and
// returns the unlock function.
func (f *Filesystem) flockDir(root *os.Root, key string, how int, create bool) (func(), error) {
	dir := path.Dir(key)
	if create {
		if err := root.MkdirAll(dir, dirPerm); err != nil {
			return nil, fmt.Errorf("file conditional write %s: %w", f.URL(key), err)
		}
	}
	d, err := root.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(d.Fd()), how); err != nil {
		d.Close()
		return nil, fmt.Errorf("file %s: flock of its directory: %v: %w", f.URL(key), err, ErrNotSupported)
	}
	return func() { d.Close() }, nil // closing the only descriptor releases the lock
}

// WriteIf compares and writes while holding an exclusive flock(2) on the
// key's directory, so that concurrent writers on one host (or on a file
// system that shares flocks between hosts) take turns. The data and its
// metadata file, which records a new random version token, are written like
// Put writes them: temporary files, fsync, rename.
func (f *Filesystem) WriteIf(ctx context.Context, key string, data []byte, version string) (string, error) {
	root, err := f.open(ctx, "conditional write", key)
	if err != nil {
		return "", err
	}
	defer root.Close()
	if err := checkConditionalSize(f.URL(key), len(data)); err != nil {
		return "", err
	}
	unlock, err := f.flockDir(root, key, syscall.LOCK_EX, true)
	if err != nil {
		return "", err
	}
	defer unlock()
	_, current, err := f.readVersion(root, key)
	switch {
	case errors.Is(err, ErrNotExist):
		current = ""
	case err != nil:
		return "", err
	}
	if current != version {
		return "", fmt.Errorf("file conditional write %s: %w", f.URL(key), ErrPrecondition)
	}
	next := tempName()[len(tempPrefix):]
	if _, err := f.put(ctx, root, key, bytes.NewReader(data), PutOptions{ContentType: "application/json"}, next); err != nil {
		return "", err
	}
	return next, nil
}
