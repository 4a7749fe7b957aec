package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/go-logr/logr"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
)

// Bucket is where dumps go. Implementations are safe for concurrent use.
type Bucket interface {
	// Put streams r (size unknown, possibly tens of GiB) to key with bounded
	// memory, checks with the store that what arrived is what was sent and
	// returns what the store confirmed. On error nothing partial is visible
	// under key: an object that was already there stays as it was, a
	// multipart upload is aborted, a temporary file is removed. Put to an
	// existing key replaces it (dumpcatcher keys are unique per dump), and
	// Put owns its key: incomplete uploads of the same key left by an earlier
	// process are removed first.
	Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (Info, error)
	// Stat describes the object at key; ErrNotExist (errors.Is) when absent.
	Stat(ctx context.Context, key string) (Info, error)
	// Get opens the object at key; ErrNotExist (errors.Is) when absent.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Delete removes the object at key. Deleting a missing key is no error.
	Delete(ctx context.Context, key string) error
	// URL names the object, e.g. s3://bucket/prefix/key or
	// file:///mnt/dumps/key. It holds no credentials.
	URL(key string) string
}

// PutOptions describe the object Put writes.
type PutOptions struct {
	// Metadata is stored with the object. Keys are lower-case letters,
	// digits and hyphens; values printable ASCII without leading or trailing
	// spaces (EncodeMetadataValue makes any string one); all of it at most
	// 2 KiB (the S3 limit). Put fails with ErrInvalidMetadata otherwise.
	// The key "sha256" is reserved: Put always stores the SHA-256 of the
	// bytes it sent there, and when the caller sets it, Put fails with a
	// *VerifyError unless the stream hashes to that value.
	Metadata map[string]string
	// ContentType defaults to application/octet-stream.
	ContentType string
	// ContentEncoding is stored as is (e.g. "gzip"); Get never decodes it.
	ContentEncoding string
}

// Info is what the store confirmed about an object.
type Info struct {
	// Key is the key relative to the destination's prefix.
	Key string
	// Size in bytes as reported by the store.
	Size int64
	// Checksum is the store's own checksum: the S3 ETag (plain MD5 hex or
	// multipart "md5-of-part-md5s-N"), or "sha256:<hex>" for files.
	Checksum string
	// Metadata as stored, including "sha256" (lower-case keys).
	Metadata map[string]string
	// ContentType and ContentEncoding as stored.
	ContentType, ContentEncoding string
	// Verified says how Put checked the object (empty from Stat), e.g.
	// "size and ETag = MD5 of 3 parts"; it also says when a check could not
	// be done, e.g. because the store's ETag is not an MD5 (SSE-KMS).
	Verified string
}

// MetaSHA256 is the metadata key holding the hex SHA-256 of the object.
const MetaSHA256 = "sha256"

// ErrNotExist is returned (wrapped) by Stat and Get when there is no object
// under the key. It is deliberately not fs.ErrNotExist, so that a missing
// credentials file or mount is never mistaken for a missing object.
var ErrNotExist = errors.New("object does not exist")

// ErrInvalidKey is returned (wrapped) for keys that ValidateKey rejects.
var ErrInvalidKey = errors.New("invalid key")

// ErrInvalidMetadata is returned (wrapped) for metadata Put rejects.
var ErrInvalidMetadata = errors.New("invalid metadata")

// VerifyError says that the store holds something other than what Put sent.
// Put removed that object before returning this error.
type VerifyError struct {
	// URL of the object.
	URL string
	// What differs: "size", "etag" or "sha256".
	What string
	// Sent is what Put computed locally, Stored what the store reported (for
	// "sha256": what the caller expected, and what was sent).
	Sent, Stored string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("verifying %s: %s differs: sent %s, store has %s", e.URL, e.What, e.Sent, e.Stored)
}

// Options configure Open. The zero value is usable.
type Options struct {
	// CredentialsDir is the directory where the credentials Secret is
	// mounted (S3 only). It holds accessKeyID and secretAccessKey (or
	// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) and optionally
	// sessionToken (AWS_SESSION_TOKEN). The files are read again whenever
	// they change, so a rotated Secret is used without a restart. Empty
	// means the AWS default chain, see DefaultCredentials.
	CredentialsDir string
	// Credentials, when set, is used instead of CredentialsDir and the
	// default chain.
	Credentials *credentials.Credentials
	// CAFile is a PEM bundle trusted in addition to the system roots for
	// an https endpoint (S3 only).
	CAFile string
	// PartSize is the multipart part size (S3 only): DefaultPartSize when
	// zero, at least MinPartSize. An object may have at most 10,000 parts,
	// so the largest object is 10,000 × PartSize (156 GiB by default).
	PartSize int64
	// PartsInFlight bounds how many parts are buffered and uploaded at once
	// (S3 only), DefaultPartsInFlight when zero. Put holds at most
	// PartsInFlight × PartSize bytes of data in memory.
	PartsInFlight int
	// MaxRetries is how many times each S3 request is attempted (with
	// exponential backoff and jitter, 200 ms to 1 s apart) before Put gives
	// up; zero means minio-go's default of 10; 1 disables retries.
	MaxRetries int
	// SkipETagCheck turns off the ETag comparison for S3-compatible stores
	// whose ETags look like MD5 sums but are not; the size is still checked
	// and every part is still sent with a Content-MD5 the store verifies.
	SkipETagCheck bool
	// Log receives the rare events that do not fail a call (an ETag that
	// cannot be compared, an abort that failed). The zero Logger discards.
	Log logr.Logger
}

// Default sizes of multipart uploads.
const (
	MiB                  = 1 << 20
	DefaultPartSize      = 16 * MiB
	MinPartSize          = 5 * MiB // the S3 minimum for all parts but the last
	MaxPartSize          = 5 << 30
	DefaultPartsInFlight = 2
	maxParts             = 10000
)

// Open returns the Bucket for a parsed destination URL.
func Open(d contract.Destination, opts Options) (Bucket, error) {
	switch d.Scheme {
	case "s3":
		return NewS3(d, opts)
	case "file":
		return NewFilesystem(d)
	default:
		return nil, fmt.Errorf("storage: unsupported destination scheme %q", d.Scheme)
	}
}

// ValidateKey checks a key relative to the destination's prefix. A key is
// 1 to 900 bytes of UTF-8 without control characters or backslashes, made
// of "/"-separated segments none of which is empty, "." or "..". Such a key
// cannot name anything outside the prefix. Backends may reserve more names
// (the filesystem backend reserves the ".meta.json" suffix).
func ValidateKey(key string) error {
	bad := func(why string) error { return fmt.Errorf("%w %q: %s", ErrInvalidKey, key, why) }
	switch {
	case key == "":
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	case len(key) > 900:
		return bad("longer than 900 bytes")
	case !utf8.ValidString(key):
		return bad("not UTF-8")
	case strings.ContainsAny(key, "\\"):
		return bad("contains a backslash")
	}
	for _, c := range key {
		if c < 0x20 || c == 0x7f {
			return bad("contains a control character")
		}
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return bad(`empty, "." and ".." segments are not allowed (nor a leading or trailing "/")`)
		}
	}
	return nil
}

// maxMetadataBytes is the S3 limit on user metadata (keys plus values).
const maxMetadataBytes = 2048

// checkMetadata validates PutOptions.Metadata and returns a copy without the
// reserved "sha256" key, plus the caller's expected SHA-256 (or "").
func checkMetadata(md map[string]string) (map[string]string, string, error) {
	out := make(map[string]string, len(md)+1)
	total := 0
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := md[k]
		if !validMetaKey(k) {
			return nil, "", fmt.Errorf("%w: key %q: want lower-case letters, digits and hyphens", ErrInvalidMetadata, k)
		}
		if !validMetaValue(v) {
			return nil, "", fmt.Errorf("%w: value of %q: want printable ASCII without leading or trailing spaces", ErrInvalidMetadata, k)
		}
		total += len(k) + len(v)
		if k == MetaSHA256 {
			if !isHex(v, 64) {
				return nil, "", fmt.Errorf("%w: %q must be 64 lower-case hex digits", ErrInvalidMetadata, k)
			}
			continue
		}
		out[k] = v
	}
	if _, ok := md[MetaSHA256]; !ok {
		total += len(MetaSHA256) + 64
	}
	if total > maxMetadataBytes {
		return nil, "", fmt.Errorf("%w: %d bytes with sha256, more than %d", ErrInvalidMetadata, total, maxMetadataBytes)
	}
	return out, md[MetaSHA256], nil
}

func validMetaKey(k string) bool {
	if k == "" || k[0] == '-' {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func validMetaValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return false
		}
	}
	return strings.TrimSpace(v) == v
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// ctxReader fails reads once ctx is done, so a Put whose only work is
// reading notices cancellation.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// readFull is io.ReadFull that reports a short (or empty) final read as
// io.EOF and passes other errors through as readError.
func readFull(r io.Reader, buf []byte) (int, error) {
	n, err := io.ReadFull(r, buf)
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return n, io.EOF
	default:
		return n, &readError{err}
	}
}

// readError marks an error of the caller's reader, so Put can report it as
// the cause rather than the cancellation it triggers.
type readError struct{ err error }

func (e *readError) Error() string { return "reading the source: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }
