package storage

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
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

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
)

// Filesystem is the Bucket of a file:// destination: a directory, typically
// a NAS share or a PersistentVolume mounted into the sidecar.
//
// An object is a regular file at <dir>/<key>; its metadata is a JSON file
// next to it, <dir>/<key>.meta.json (portable to NFS and SMB, unlike
// extended attributes). Put writes both under temporary names starting with
// ".tmp-dumpcatcher-" in the target directory, fsyncs them, renames the
// metadata and then the data into place and fsyncs the directory, so a key
// is visible only when complete. All access goes through os.Root, so no key
// and no symbolic link inside the directory can reach outside it.
type Filesystem struct {
	dir string
}

var _ Bucket = (*Filesystem)(nil)

const (
	metaSuffix = ".meta.json"
	tempPrefix = ".tmp-dumpcatcher-"
	filePerm   = 0o600 // heap dumps hold secrets
	dirPerm    = 0o700
	copyBuffer = 1 << 20
)

// NewFilesystem returns the Bucket of a file:// destination. The directory
// must exist: creating it could write dumps into the container's own
// filesystem when the volume is not mounted, and lose them.
func NewFilesystem(d contract.Destination) (*Filesystem, error) {
	if d.Scheme != "file" {
		return nil, fmt.Errorf("file storage: destination scheme is %q, not file", d.Scheme)
	}
	fi, err := os.Stat(d.Prefix)
	if err != nil {
		return nil, fmt.Errorf("file storage: %w (is the volume mounted?)", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("file storage: %s is not a directory", d.Prefix)
	}
	return &Filesystem{dir: d.Prefix}, nil
}

// URL returns file:///dir/key.
func (f *Filesystem) URL(key string) string {
	return (&url.URL{Scheme: "file", Path: path.Join(f.dir, key)}).String()
}

// checkKey applies ValidateKey and the names this backend reserves.
func (f *Filesystem) checkKey(key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if strings.HasSuffix(key, metaSuffix) {
		return fmt.Errorf("%w %q: the suffix %s is reserved for metadata files", ErrInvalidKey, key, metaSuffix)
	}
	for _, seg := range strings.Split(key, "/") {
		if strings.HasPrefix(seg, tempPrefix) {
			return fmt.Errorf("%w %q: names starting with %s are reserved for temporary files", ErrInvalidKey, key, tempPrefix)
		}
	}
	return nil
}

func (f *Filesystem) open(ctx context.Context, op, key string) (*os.Root, error) {
	if err := f.checkKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("file %s %s: %w", op, f.URL(key), err)
	}
	// Opened per call, so a remounted volume is picked up.
	root, err := os.OpenRoot(f.dir)
	if err != nil {
		return nil, fmt.Errorf("file %s %s: %w", op, f.URL(key), err)
	}
	return root, nil
}

// fileMeta is the content of <key>.meta.json.
type fileMeta struct {
	Size            int64             `json:"size"`
	SHA256          string            `json:"sha256"`
	ContentType     string            `json:"contentType,omitempty"`
	ContentEncoding string            `json:"contentEncoding,omitempty"`
	Metadata        map[string]string `json:"metadata"`
	// Version is set by WriteIf: a random token, new on every write.
	Version string `json:"version,omitempty"`
}

func tempName() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails
	return tempPrefix + hex.EncodeToString(b[:])
}

// Put writes r to a temporary file, fsyncs it, checks its size, writes the
// metadata the same way and renames both into place.
func (f *Filesystem) Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (_ Info, err error) {
	root, err := f.open(ctx, "put", key)
	if err != nil {
		return Info{}, err
	}
	defer root.Close()
	return f.put(ctx, root, key, r, opts, "")
}

// put is Put on an open root; version is recorded in the metadata file
// (WriteIf's version token, empty for Put).
func (f *Filesystem) put(ctx context.Context, root *os.Root, key string, r io.Reader, opts PutOptions, version string) (_ Info, err error) {
	meta, wantSHA, err := checkMetadata(opts.Metadata)
	if err != nil {
		return Info{}, err
	}
	fail := func(err error) error { return fmt.Errorf("file put %s: %w", f.URL(key), err) }
	dir := path.Dir(key)
	if dir != "." {
		if err := root.MkdirAll(dir, dirPerm); err != nil {
			return Info{}, fail(err)
		}
	}

	tmpData, tmpMeta := path.Join(dir, tempName()), path.Join(dir, tempName())
	var renamedMeta, renamedData bool
	defer func() {
		if err == nil {
			return
		}
		switch {
		case renamedData:
			root.Remove(key)
			root.Remove(key + metaSuffix)
		case renamedMeta:
			root.Remove(key + metaSuffix)
		}
		root.Remove(tmpData)
		root.Remove(tmpMeta)
	}()

	sha := sha256.New()
	n, err := writeFile(root, tmpData, ctxReader{ctx: ctx, r: r}, sha)
	if err != nil {
		return Info{}, fail(err)
	}
	fi, err := root.Stat(tmpData)
	if err != nil {
		return Info{}, fail(err)
	}
	if fi.Size() != n {
		return Info{}, &VerifyError{URL: f.URL(key), What: "size", Sent: fmt.Sprint(n), Stored: fmt.Sprint(fi.Size())}
	}
	sum, err := checkSHA(f.URL(key), wantSHA, sha)
	if err != nil {
		return Info{}, err
	}
	meta[MetaSHA256] = sum
	fm := fileMeta{Size: n, SHA256: sum, ContentType: opts.ContentType, ContentEncoding: opts.ContentEncoding, Metadata: meta, Version: version}
	if fm.ContentType == "" {
		fm.ContentType = "application/octet-stream"
	}
	js, err := json.MarshalIndent(fm, "", "  ")
	if err != nil {
		return Info{}, fail(err)
	}
	if _, err := writeFile(root, tmpMeta, strings.NewReader(string(js)+"\n"), nil); err != nil {
		return Info{}, fail(err)
	}
	if err := ctx.Err(); err != nil {
		return Info{}, fail(err)
	}
	// The metadata goes first, so that a visible data file always has its
	// metadata; a crash between the renames leaves an orphan metadata file,
	// which Stat ignores and the next Put replaces.
	if err := root.Rename(tmpMeta, key+metaSuffix); err != nil {
		return Info{}, fail(err)
	}
	renamedMeta = true
	if err := root.Rename(tmpData, key); err != nil {
		return Info{}, fail(err)
	}
	renamedData = true
	if err := syncDir(root, dir); err != nil {
		return Info{}, fail(err)
	}
	return Info{
		Key:             key,
		Size:            n,
		Checksum:        "sha256:" + sum,
		Metadata:        copyMap(meta),
		ContentType:     fm.ContentType,
		ContentEncoding: fm.ContentEncoding,
		Verified:        "size after fsync; sha256 computed while writing",
	}, nil
}

// writeFile copies r into a new file name under root, feeding h, and fsyncs
// it.
func writeFile(root *os.Root, name string, r io.Reader, h io.Writer) (int64, error) {
	file, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, copyBuffer)
	var n int64
	for {
		nr, rerr := r.Read(buf)
		if nr > 0 {
			if h != nil {
				h.Write(buf[:nr])
			}
			nw, werr := file.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				file.Close()
				return n, werr
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			file.Close()
			return n, &readError{rerr}
		}
	}
	if err := file.Sync(); err != nil {
		file.Close()
		return n, err
	}
	return n, file.Close()
}

// syncDir fsyncs a directory so renames in it survive a crash. File systems
// that cannot fsync directories (EINVAL, ENOTSUP) are tolerated.
func syncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return err
	}
	return nil
}

// Stat returns the file's size and the metadata recorded by Put. A file that
// was not written by Put (or whose metadata is stale) has no metadata and
// no checksum.
func (f *Filesystem) Stat(ctx context.Context, key string) (Info, error) {
	root, err := f.open(ctx, "stat", key)
	if err != nil {
		return Info{}, err
	}
	defer root.Close()
	fi, err := f.regular(root, "stat", key)
	if err != nil {
		return Info{}, err
	}
	info := Info{Key: key, Size: fi.Size(), Metadata: map[string]string{}}
	if js, err := root.ReadFile(key + metaSuffix); err == nil {
		var fm fileMeta
		if json.Unmarshal(js, &fm) == nil && fm.Size == fi.Size() {
			info.Checksum = "sha256:" + fm.SHA256
			info.ContentType, info.ContentEncoding = fm.ContentType, fm.ContentEncoding
			info.Metadata = copyMap(fm.Metadata)
			info.Metadata[MetaSHA256] = fm.SHA256
		}
	}
	return info, nil
}

// regular stats key and returns ErrNotExist unless it is a regular file.
func (f *Filesystem) regular(root *os.Root, op, key string) (os.FileInfo, error) {
	fi, err := root.Stat(key)
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR), err == nil && !fi.Mode().IsRegular():
		return nil, fmt.Errorf("file %s %s: %w", op, f.URL(key), ErrNotExist)
	case err != nil:
		return nil, fmt.Errorf("file %s %s: %w", op, f.URL(key), err)
	}
	return fi, nil
}

// Get opens the file.
func (f *Filesystem) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	root, err := f.open(ctx, "get", key)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if _, err := f.regular(root, "get", key); err != nil {
		return nil, err
	}
	file, err := root.Open(key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("file get %s: %w", f.URL(key), ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("file get %s: %w", f.URL(key), err)
	}
	return file, nil
}

// Delete removes the file and its metadata; a missing file is no error.
func (f *Filesystem) Delete(ctx context.Context, key string) error {
	root, err := f.open(ctx, "delete", key)
	if err != nil {
		return err
	}
	defer root.Close()
	if _, err := f.regular(root, "delete", key); err == nil {
		if err := root.Remove(key); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("file delete %s: %w", f.URL(key), err)
		}
	} else if !errors.Is(err, ErrNotExist) {
		return err
	}
	if err := root.Remove(key + metaSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("file delete %s: %w", f.URL(key), err)
	}
	return nil
}
