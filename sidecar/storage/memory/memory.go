// Package memory is an in-memory storage.Bucket (and storage.Conditional)
// with fault hooks, for tests of the logic above the store (the uploader's
// retries and outages, the dump lock) that need no real S3: they run in
// milliseconds. It passes the storage conformance suite (storagetest); what
// is about S3 itself (multipart uploads, ETags, credentials, TLS) is tested
// against MinIO (miniotest).
//
//	b := memory.New("dumps")
//	b.SetHook(memory.Fail(errOutage, memory.OpPut)) // the store is down
//	...
//	b.SetHook(nil) // and back
//	objs := b.Objects()
package memory

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"sync"

	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
)

// Op names an operation a Hook is called for.
type Op string

// Operations. OpPutCommit comes after Put has read the whole stream and
// before the object becomes visible: failing it models a store that fails
// at the end of an upload, after all data was sent.
const (
	OpPut         Op = "put"
	OpPutCommit   Op = "put-commit"
	OpStat        Op = "stat"
	OpGet         Op = "get"
	OpDelete      Op = "delete"
	OpReadVersion Op = "read-version"
	OpWriteIf     Op = "write-if"
)

// Hook is called at the start of every operation (and at OpPutCommit) with
// the operation's context; an error fails the operation with that error
// (wrapped), and a Hook may block (a stalled store) as long as it returns
// when ctx is done.
type Hook func(ctx context.Context, op Op, key string) error

// Object is a stored object.
type Object struct {
	Key  string
	Data []byte
	Info storage.Info
}

// Bucket is an in-memory storage.Bucket. The zero value is not usable; call
// New.
type Bucket struct {
	name string

	mu       sync.Mutex
	objects  map[string]Object
	versions map[string]string
	nextVer  int
	hook     Hook
	calls    map[Op]int
	inFlight int
}

var (
	_ storage.Bucket      = (*Bucket)(nil)
	_ storage.Conditional = (*Bucket)(nil)
)

// New returns an empty bucket whose URLs are mem://name/key.
func New(name string) *Bucket {
	return &Bucket{name: name, objects: map[string]Object{}, versions: map[string]string{}, calls: map[Op]int{}}
}

// SetHook installs h for the operations from now on; nil removes it.
func (b *Bucket) SetHook(h Hook) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hook = h
}

// Calls returns how many times op was attempted (failed attempts included).
func (b *Bucket) Calls(op Op) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[op]
}

// Objects returns copies of the stored objects, ordered by key.
func (b *Bucket) Objects() []Object {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Object, 0, len(b.objects))
	for _, k := range slices.Sorted(maps.Keys(b.objects)) {
		out = append(out, copyObject(b.objects[k]))
	}
	return out
}

// Leftovers lists what Puts under way hold outside the bucket: a Put
// buffers its stream privately and publishes it at once, so once no Put
// is running this is empty, whatever failed (storagetest.Target.Leftovers).
func (b *Bucket) Leftovers() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var left []string
	for i := range b.inFlight {
		left = append(left, "put in flight #"+strconv.Itoa(i+1))
	}
	return left
}

func (b *Bucket) call(ctx context.Context, op Op, key string) error {
	b.mu.Lock()
	b.calls[op]++
	h := b.hook
	b.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mem %s %s: %w", op, b.URL(key), err)
	}
	if h == nil {
		return nil
	}
	if err := h(ctx, op, key); err != nil {
		return fmt.Errorf("mem %s %s: %w", op, b.URL(key), err)
	}
	return nil
}

// URL is mem://name/key.
func (b *Bucket) URL(key string) string { return "mem://" + b.name + "/" + key }

// Put reads r into memory and publishes it under key when the whole stream
// was read, its SHA-256 matches an expected one and no hook failed it.
func (b *Bucket) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) (storage.Info, error) {
	if err := storage.ValidateKey(key); err != nil {
		return storage.Info{}, err
	}
	md, want, err := storage.ValidateMetadata(opts.Metadata)
	if err != nil {
		return storage.Info{}, err
	}
	if err := b.call(ctx, OpPut, key); err != nil {
		return storage.Info{}, err
	}
	b.mu.Lock()
	b.inFlight++
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.inFlight--
		b.mu.Unlock()
	}()
	var buf bytes.Buffer
	chunk := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return storage.Info{}, fmt.Errorf("mem put %s: %w", b.URL(key), err)
		}
		n, err := r.Read(chunk)
		buf.Write(chunk[:n])
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return storage.Info{}, fmt.Errorf("mem put %s: reading the source: %w", b.URL(key), err)
		}
	}
	if err := ctx.Err(); err != nil {
		return storage.Info{}, fmt.Errorf("mem put %s: %w", b.URL(key), err)
	}
	data := buf.Bytes()
	sum := sha256.Sum256(data)
	got := hex.EncodeToString(sum[:])
	if want != "" && want != got {
		return storage.Info{}, &storage.VerifyError{URL: b.URL(key), What: "sha256", Sent: got, Stored: want}
	}
	if err := b.call(ctx, OpPutCommit, key); err != nil {
		return storage.Info{}, err
	}
	md[storage.MetaSHA256] = got
	info := storage.Info{
		Key: key, Size: int64(len(data)), Checksum: "sha256:" + got, Metadata: md,
		ContentType: opts.ContentType, ContentEncoding: opts.ContentEncoding,
		Verified: "in memory: size and sha256 of the bytes read",
	}
	if info.ContentType == "" {
		info.ContentType = "application/octet-stream"
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.store(key, data, info)
	return copyInfo(info), nil
}

// store publishes an object with a new version; b.mu is held.
func (b *Bucket) store(key string, data []byte, info storage.Info) string {
	b.nextVer++
	v := "v" + strconv.Itoa(b.nextVer)
	b.objects[key] = Object{Key: key, Data: slices.Clone(data), Info: copyInfo(info)}
	b.versions[key] = v
	return v
}

func (b *Bucket) lookup(ctx context.Context, op Op, key string) (Object, string, error) {
	if err := storage.ValidateKey(key); err != nil {
		return Object{}, "", err
	}
	if err := b.call(ctx, op, key); err != nil {
		return Object{}, "", err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.objects[key]
	if !ok {
		return Object{}, "", fmt.Errorf("mem %s %s: %w", op, b.URL(key), storage.ErrNotExist)
	}
	return copyObject(o), b.versions[key], nil
}

// Stat describes the object at key.
func (b *Bucket) Stat(ctx context.Context, key string) (storage.Info, error) {
	o, _, err := b.lookup(ctx, OpStat, key)
	if err != nil {
		return storage.Info{}, err
	}
	info := o.Info
	info.Verified = ""
	return info, nil
}

// Get returns the object's bytes.
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	o, _, err := b.lookup(ctx, OpGet, key)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(o.Data)), nil
}

// Delete removes the object at key, if any.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	if err := storage.ValidateKey(key); err != nil {
		return err
	}
	if err := b.call(ctx, OpDelete, key); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.objects, key)
	delete(b.versions, key)
	return nil
}

// ReadVersion returns the object and its version (a counter, new on every
// write).
func (b *Bucket) ReadVersion(ctx context.Context, key string) ([]byte, string, error) {
	o, v, err := b.lookup(ctx, OpReadVersion, key)
	if err != nil {
		return nil, "", err
	}
	if len(o.Data) > storage.MaxConditionalSize {
		return nil, "", fmt.Errorf("mem read %s: %d bytes, at most %d", b.URL(key), len(o.Data), storage.MaxConditionalSize)
	}
	return o.Data, v, nil
}

// WriteIf writes data when the object at key is still at version ("": when
// there is none), atomically.
func (b *Bucket) WriteIf(ctx context.Context, key string, data []byte, version string) (string, error) {
	if err := storage.ValidateKey(key); err != nil {
		return "", err
	}
	if len(data) > storage.MaxConditionalSize {
		return "", fmt.Errorf("mem conditional write %s: %d bytes, at most %d", b.URL(key), len(data), storage.MaxConditionalSize)
	}
	if err := b.call(ctx, OpWriteIf, key); err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.versions[key] != version {
		return "", fmt.Errorf("mem conditional write %s: %w", b.URL(key), storage.ErrPrecondition)
	}
	hexSum := hex.EncodeToString(sum[:])
	return b.store(key, data, storage.Info{
		Key: key, Size: int64(len(data)), Checksum: "sha256:" + hexSum,
		Metadata: map[string]string{storage.MetaSHA256: hexSum}, ContentType: "application/json",
	}), nil
}

// Fail is a Hook that fails ops (every op when none is given) with err.
func Fail(err error, ops ...Op) Hook {
	return func(_ context.Context, op Op, _ string) error {
		if len(ops) == 0 || slices.Contains(ops, op) {
			return err
		}
		return nil
	}
}

// Stall is a Hook that blocks ops (every op when none is given) until
// release is closed (then they proceed) or their context is done (then they
// fail with its error): a store that stopped answering.
func Stall(release <-chan struct{}, ops ...Op) Hook {
	return func(ctx context.Context, op Op, _ string) error {
		if len(ops) != 0 && !slices.Contains(ops, op) {
			return nil
		}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func copyInfo(i storage.Info) storage.Info {
	i.Metadata = maps.Clone(i.Metadata)
	return i
}

func copyObject(o Object) Object {
	return Object{Key: o.Key, Data: slices.Clone(o.Data), Info: copyInfo(o.Info)}
}
