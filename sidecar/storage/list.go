package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
)

// ObjectInfo is one object of a listing.
type ObjectInfo struct {
	// Key relative to the destination's prefix.
	Key          string
	Size         int64
	LastModified time.Time
	// Metadata as stored (lower-case keys, "sha256" when known), or nil
	// when the store's listing does not return metadata (AWS S3: only
	// MinIO's ListObjects extension does); Stat has it then.
	Metadata map[string]string
	// ContentEncoding as stored, when the listing returns it.
	ContentEncoding string
}

// Lister is implemented by the Buckets that can enumerate objects and read
// parts of them (S3 and Filesystem). It is apart from Bucket so that other
// Bucket implementations need not have it.
type Lister interface {
	// List calls fn for every object whose key starts with prefix, which is
	// "" or a valid key followed by "/", in no promised order, without
	// holding the listing in memory. Backend-internal objects (temporary
	// files, the file backend's metadata files, incomplete uploads) are
	// not listed. List stops at the first error of fn and returns it
	// (possibly wrapped: test it with errors.Is).
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// GetRange opens length bytes of the object at key from offset
	// (length < 0: to the end); ErrNotExist (errors.Is) when absent.
	GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
}

// Presigner is implemented by Buckets that can hand out URLs that read an
// object without further authentication (S3).
type Presigner interface {
	// PresignGet returns a URL that GETs the object at key until expiry
	// has passed. It does not check that the object exists.
	PresignGet(ctx context.Context, key string, expiry time.Duration) (*url.URL, error)
}

var (
	_ Lister    = (*S3)(nil)
	_ Lister    = (*Filesystem)(nil)
	_ Presigner = (*S3)(nil)
)

// checkListPrefix accepts "" and "<valid key>/".
func checkListPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	p, ok := strings.CutSuffix(prefix, "/")
	if !ok {
		return fmt.Errorf("%w: list prefix %q must end with /", ErrInvalidKey, prefix)
	}
	return ValidateKey(p)
}

func checkRange(offset, length int64) error {
	if offset < 0 {
		return fmt.Errorf("storage: negative offset %d", offset)
	}
	return nil
}

// List walks the directory prefix names without following symbolic links
// (they are not listed) and reads each file's metadata file.
func (f *Filesystem) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	if err := checkListPrefix(prefix); err != nil {
		return err
	}
	root, err := os.OpenRoot(f.dir)
	if err != nil {
		return fmt.Errorf("file list %s: %w", f.URL(prefix), err)
	}
	defer root.Close()
	start := strings.TrimSuffix(prefix, "/")
	if start == "" {
		start = "."
	} else {
		// os.Root follows links inside the directory, and WalkDir stats
		// its start: each segment of the prefix must be a real directory.
		segs := strings.Split(start, "/")
		for i := range segs {
			fi, err := root.Lstat(path.Join(segs[:i+1]...))
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || err == nil && !fi.IsDir() {
				return nil // nothing under the prefix
			}
			if err != nil {
				return fmt.Errorf("file list %s: %w", f.URL(prefix), err)
			}
		}
	}
	err = fs.WalkDir(root.FS(), start, func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			if name == start && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)) {
				return fs.SkipAll // nothing under the prefix
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		base := path.Base(name)
		if d.IsDir() {
			if strings.HasPrefix(base, tempPrefix) {
				return fs.SkipDir
			}
			return nil
		}
		// DirEntry types come from lstat: a link is never regular.
		if !d.Type().IsRegular() || strings.HasSuffix(base, metaSuffix) || strings.HasPrefix(base, tempPrefix) {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed meanwhile
		}
		if err != nil {
			return err
		}
		oi := ObjectInfo{Key: name, Size: fi.Size(), LastModified: fi.ModTime().UTC(), Metadata: map[string]string{}}
		if fm, ok := readMeta(root, name, fi.Size()); ok {
			oi.Metadata = copyMap(fm.Metadata)
			oi.Metadata[MetaSHA256] = fm.SHA256
			oi.ContentEncoding = fm.ContentEncoding
		}
		return fn(oi)
	})
	if err != nil {
		return fmt.Errorf("file list %s: %w", f.URL(prefix), err)
	}
	return nil
}

// maxMetaFile bounds what is read of a metadata file.
const maxMetaFile = 64 << 10

// readMeta reads <key>.meta.json when it describes a file of size bytes.
func readMeta(root *os.Root, key string, size int64) (fileMeta, bool) {
	mf, err := root.Open(key + metaSuffix)
	if err != nil {
		return fileMeta{}, false
	}
	defer mf.Close()
	if fi, err := mf.Stat(); err != nil || !fi.Mode().IsRegular() {
		return fileMeta{}, false
	}
	var fm fileMeta
	if json.NewDecoder(io.LimitReader(mf, maxMetaFile)).Decode(&fm) != nil || fm.Size != size {
		return fileMeta{}, false
	}
	return fm, true
}

type sectionReadCloser struct {
	io.Reader
	io.Closer
}

// GetRange opens the file and reads from offset.
func (f *Filesystem) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := checkRange(offset, length); err != nil {
		return nil, err
	}
	rc, err := f.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	file := rc.(*os.File)
	if _, err := file.Seek(offset, io.SeekStart); err != nil {
		file.Close()
		return nil, fmt.Errorf("file get %s: %w", f.URL(key), err)
	}
	if length < 0 {
		return file, nil
	}
	return sectionReadCloser{io.LimitReader(file, length), file}, nil
}

// List lists the objects under prefix with ListObjectsV2, asking for user
// metadata (a MinIO extension other stores ignore: Metadata is nil then).
func (b *S3) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	if err := checkListPrefix(prefix); err != nil {
		return err
	}
	full := prefix
	if b.prefix != "" {
		full = b.prefix + "/" + prefix
	}
	// The iterator, not ListObjects: ListObjects' goroutine blocks on its
	// channel forever unless drained, even after ctx is cancelled
	// (TestS3ListStopsItsGoroutine). Breaking out of the iterator and
	// cancelling ctx ends it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for oi := range b.client.ListObjectsIter(ctx, b.bucket, minio.ListObjectsOptions{Prefix: full, Recursive: true, WithMetadata: true}) {
		if oi.Err != nil {
			return b.fail("list", prefix, oi.Err)
		}
		key := strings.TrimPrefix(oi.Key, b.prefix+"/")
		if b.prefix == "" {
			key = oi.Key
		}
		info := ObjectInfo{Key: key, Size: oi.Size, LastModified: oi.LastModified.UTC()}
		if len(oi.UserMetadata) > 0 {
			info.Metadata = map[string]string{}
			for k, v := range oi.UserMetadata {
				lk := strings.ToLower(k)
				if m, ok := strings.CutPrefix(lk, "x-amz-meta-"); ok {
					info.Metadata[m] = v
				} else if lk == "content-encoding" {
					info.ContentEncoding = v
				}
			}
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// GetRange gets the object with a Range header.
func (b *S3) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if err := checkRange(offset, length); err != nil {
		return nil, err
	}
	var opts minio.GetObjectOptions
	switch {
	case length == 0:
		if _, err := b.Stat(ctx, key); err != nil {
			return nil, err
		}
		return io.NopCloser(strings.NewReader("")), nil
	case length > 0:
		if err := opts.SetRange(offset, offset+length-1); err != nil {
			return nil, err
		}
	case offset > 0:
		if err := opts.SetRange(offset, 0); err != nil {
			return nil, err
		}
	}
	rc, _, _, err := b.core.GetObject(ctx, b.bucket, b.object(key), opts)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("s3 get %s: %w", b.URL(key), ErrNotExist)
		}
		return nil, b.fail("get", key, err)
	}
	return rc, nil
}

// PresignGet presigns a GET of the object.
func (b *S3) PresignGet(ctx context.Context, key string, expiry time.Duration) (*url.URL, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	u, err := b.client.PresignedGetObject(ctx, b.bucket, b.object(key), expiry, nil)
	if err != nil {
		return nil, b.fail("presign", key, err)
	}
	return u, nil
}
