package storage

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/go-logr/logr"
	"github.com/minio/minio-go/v7"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
)

// S3 is the Bucket of an s3:// destination: AWS S3 or an S3-compatible store
// (MinIO, Ceph RGW, Alibaba OSS, Huawei OBS, ...), through minio-go.
type S3 struct {
	client        *minio.Client
	core          minio.Core
	bucket        string
	prefix        string
	endpoint      string // for error messages
	partSize      int64
	bufs          *bufPool
	skipETagCheck bool
	log           logr.Logger
}

var _ Bucket = (*S3)(nil)

// NewS3 returns the Bucket of an s3:// destination. It makes no request.
//
// Without ?endpoint= it talks to AWS S3 over https. path-style=true selects
// path-style requests (https://host/bucket/key); otherwise minio-go uses
// virtual-host requests (https://bucket.host/key) for the endpoints it knows
// support them (AWS, GCS, Alibaba OSS) and path-style for the others
// (IP addresses, localhost, other hosts).
func NewS3(d contract.Destination, opts Options) (*S3, error) {
	if d.Scheme != "s3" {
		return nil, fmt.Errorf("s3 storage: destination scheme is %q, not s3", d.Scheme)
	}
	partSize := opts.PartSize
	if partSize == 0 {
		partSize = DefaultPartSize
	}
	if partSize < MinPartSize || partSize > MaxPartSize {
		return nil, fmt.Errorf("s3 storage: part size %d out of range [%d, %d]", partSize, MinPartSize, MaxPartSize)
	}
	inFlight := opts.PartsInFlight
	if inFlight == 0 {
		inFlight = DefaultPartsInFlight
	}
	if inFlight < 1 {
		return nil, fmt.Errorf("s3 storage: parts in flight %d, want at least 1", inFlight)
	}
	if opts.MaxRetries < 0 {
		return nil, fmt.Errorf("s3 storage: max retries %d, want at least 0", opts.MaxRetries)
	}

	host, secure := "s3.amazonaws.com", true
	endpoint := "https://s3.amazonaws.com"
	if d.Endpoint != "" {
		u, err := url.Parse(d.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("s3 storage: invalid endpoint %q: want http(s)://host[:port]", d.Endpoint)
		}
		if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
			return nil, fmt.Errorf("s3 storage: endpoint %q must not have a path or query", d.Endpoint)
		}
		host, secure, endpoint = u.Host, u.Scheme == "https", u.Scheme+"://"+u.Host
	}

	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("s3 storage: %w", err)
	}
	if opts.CAFile != "" {
		if !secure {
			return nil, fmt.Errorf("s3 storage: a CA file is set but endpoint %s is not https", endpoint)
		}
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("s3 storage: reading CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("s3 storage: CA file %s holds no PEM certificate", opts.CAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}

	creds := opts.Credentials
	switch {
	case creds != nil:
	case opts.CredentialsDir != "":
		creds = CredentialsFromDir(opts.CredentialsDir)
	default:
		creds = DefaultCredentials()
	}

	lookup := minio.BucketLookupAuto
	if d.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(host, &minio.Options{
		Creds:        creds,
		Secure:       secure,
		Transport:    tr,
		Region:       d.Region,
		BucketLookup: lookup,
		MaxRetries:   opts.MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 storage: endpoint %s: %w", endpoint, err)
	}
	return &S3{
		client:        client,
		core:          minio.Core{Client: client},
		bucket:        d.Bucket,
		prefix:        d.Prefix,
		endpoint:      endpoint,
		partSize:      partSize,
		bufs:          newBufPool(partSize, inFlight),
		skipETagCheck: opts.SkipETagCheck,
		log:           opts.Log,
	}, nil
}

func (b *S3) object(key string) string {
	if b.prefix == "" {
		return key
	}
	return b.prefix + "/" + key
}

// URL returns s3://bucket/prefix/key.
func (b *S3) URL(key string) string { return "s3://" + b.bucket + "/" + b.object(key) }

// fail wraps err of op on key with the object URL and the endpoint (never
// credentials), keeping S3 error codes visible.
func (b *S3) fail(op, key string, err error) error {
	var er minio.ErrorResponse
	if errors.As(err, &er) && er.Code != "" {
		return &s3Error{op: op, url: b.URL(key), endpoint: b.endpoint, code: er.Code, status: er.StatusCode, err: err}
	}
	return &s3Error{op: op, url: b.URL(key), endpoint: b.endpoint, err: err}
}

type s3Error struct {
	op, url, endpoint, code string
	status                  int
	err                     error
}

func (e *s3Error) Error() string {
	s := fmt.Sprintf("s3 %s %s (endpoint %s): ", e.op, e.url, e.endpoint)
	if e.code != "" {
		s += e.code + ": "
	}
	return s + e.err.Error()
}

func (e *s3Error) Unwrap() error { return e.err }

// isNotFound reports whether err means that the object (not the bucket) is
// missing.
func isNotFound(err error) bool {
	var er minio.ErrorResponse
	if !errors.As(err, &er) {
		return false
	}
	switch er.Code {
	case minio.NoSuchKey:
		return true
	case minio.NoSuchBucket:
		return false
	}
	return er.StatusCode == http.StatusNotFound && er.Code != "NoSuchBucket"
}

// Stat returns the object's size, ETag, metadata and content headers.
func (b *S3) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	oi, err := b.client.StatObject(ctx, b.bucket, b.object(key), minio.StatObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			return Info{}, fmt.Errorf("s3 stat %s: %w", b.URL(key), ErrNotExist)
		}
		return Info{}, b.fail("stat", key, err)
	}
	info := b.info(key, oi)
	if _, ok := info.Metadata[MetaSHA256]; !ok && oi.UserTagCount > 0 {
		// Multipart uploads carry their SHA-256 as a tag (see addSHA256).
		t, err := b.client.GetObjectTagging(ctx, b.bucket, b.object(key), minio.GetObjectTaggingOptions{})
		if err != nil {
			b.log.Error(b.fail("stat (tags)", key, err), "could not read the sha256 tag")
		} else if sum := t.ToMap()[MetaSHA256]; sum != "" {
			info.Metadata[MetaSHA256] = sum
		}
	}
	return info, nil
}

func (b *S3) info(key string, oi minio.ObjectInfo) Info {
	md := make(map[string]string, len(oi.UserMetadata))
	for k, v := range oi.UserMetadata {
		md[strings.ToLower(k)] = v
	}
	return Info{
		Key:             key,
		Size:            oi.Size,
		Checksum:        oi.ETag,
		Metadata:        md,
		ContentType:     oi.ContentType,
		ContentEncoding: oi.Metadata.Get("Content-Encoding"),
	}
}

// Get opens the object. The body is not decoded whatever its
// Content-Encoding.
func (b *S3) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	rc, _, _, err := b.core.GetObject(ctx, b.bucket, b.object(key), minio.GetObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("s3 get %s: %w", b.URL(key), ErrNotExist)
		}
		return nil, b.fail("get", key, err)
	}
	return rc, nil
}

// Delete removes the object; a missing object is no error.
func (b *S3) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := b.client.RemoveObject(ctx, b.bucket, b.object(key), minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return b.fail("delete", key, err)
	}
	return nil
}
