package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"github.com/dumpcatcher/dumpcatcher/dumpsapi/apis/dumps/v1alpha1"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
)

// HeaderSHA256 carries the hex SHA-256 of the stored bytes on downloads.
const HeaderSHA256 = "X-Dumpcatcher-Sha256"

// copyBuffer is the buffer of a download: memory per download is bounded
// by it (and the decoder's window when decompressing).
const copyBuffer = 256 << 10

// maxZstdWindow bounds the memory of a zstd decoder (the uploader's
// encoder uses far smaller windows).
const maxZstdWindow = 64 << 20

// DownloadREST is the dumps/download subresource: GET streams the stored
// bytes, with HTTP Range requests (206) on them, or decompressed with
// ?decompress=true (whole object only).
type DownloadREST struct{ stores *Stores }

// NewDownloadREST returns the download subresource.
func NewDownloadREST(stores *Stores) *DownloadREST { return &DownloadREST{stores: stores} }

var _ rest.Connecter = (*DownloadREST)(nil)

// New implements rest.Storage.
func (r *DownloadREST) New() runtime.Object { return &v1alpha1.Dump{} }

// Destroy implements rest.Storage.
func (r *DownloadREST) Destroy() {}

// ConnectMethods implements rest.Connecter.
func (r *DownloadREST) ConnectMethods() []string { return []string{http.MethodGet} }

// NewConnectOptions implements rest.Connecter: the query (decompress) is
// read by the handler.
func (r *DownloadREST) NewConnectOptions() (runtime.Object, bool, string) { return nil, false, "" }

// Connect implements rest.Connecter: it finds the dump (404, 503 as for
// get) before any byte is sent.
func (r *DownloadREST) Connect(ctx context.Context, name string, _ runtime.Object, _ rest.Responder) (http.Handler, error) {
	ns, ok := genericapirequest.NamespaceFrom(ctx)
	if !ok || ns == "" {
		return nil, apierrors.NewBadRequest("a namespace is required to download a dump")
	}
	f, err := r.stores.find(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	d, err := r.stores.dump(ctx, ns, f)
	if err != nil {
		return nil, err
	}
	return &downloadHandler{dest: f.dest, key: f.key, dump: d}, nil
}

type downloadHandler struct {
	dest Destination
	key  string
	dump *v1alpha1.Dump
}

func writeError(w http.ResponseWriter, err *apierrors.StatusError) {
	st := err.Status()
	st.Kind, st.APIVersion = "Status", "v1"
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.WriteHeader(int(st.Code))
	_ = json.NewEncoder(w).Encode(st)
}

func (h *downloadHandler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	d := h.dump
	hdr := w.Header()
	hdr.Set("Content-Type", "application/octet-stream")
	if d.File != "" {
		hdr.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": d.File}))
	}
	decompress, _ := strconv.ParseBool(req.URL.Query().Get("decompress"))
	if !decompress || d.Encoding == "" || d.Encoding == "none" {
		if d.SHA256 != "" {
			hdr.Set(HeaderSHA256, d.SHA256)
			hdr.Set("ETag", `"`+d.SHA256+`"`) // If-Range resumes only the same bytes
		}
		rs := &rangeReader{ctx: req.Context(), open: func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			return h.dest.Store.GetRange(ctx, h.key, off, n)
		}, size: d.Size}
		defer rs.Close()
		em := &errorMapper{ResponseWriter: w, rs: rs}
		http.ServeContent(em, req, "", time.Time{}, rs)
		em.finish(d.Name, h.dest)
		return
	}
	if req.Header.Get("Range") != "" {
		writeError(w, apierrors.NewBadRequest("decompress=true cannot be combined with a Range request: fetch ranges of the stored bytes and decompress them yourself"))
		return
	}
	rc, err := h.dest.Store.GetRange(req.Context(), h.key, 0, -1)
	if err != nil {
		writeError(w, storeStatus(h.dest, d.Name, err))
		return
	}
	defer rc.Close()
	var dec io.Reader
	switch d.Encoding {
	case "gzip":
		zr, err := gzip.NewReader(rc)
		if err != nil {
			writeError(w, apierrors.NewInternalError(fmt.Errorf("dump %s is not valid gzip: %w", d.Name, err)))
			return
		}
		defer zr.Close()
		dec = zr
	case "zstd":
		zr, err := zstd.NewReader(rc, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			writeError(w, apierrors.NewInternalError(err))
			return
		}
		defer zr.Close()
		dec = zr
	default:
		writeError(w, apierrors.NewBadRequest(fmt.Sprintf("dump %s has encoding %q, which the server cannot decompress; download it without decompress=true", d.Name, d.Encoding)))
		return
	}
	if d.File != "" {
		name := d.File
		for _, ext := range []string{".gz", ".zst"} {
			if len(name) > len(ext) && name[len(name)-len(ext):] == ext {
				name = name[:len(name)-len(ext)]
			}
		}
		hdr.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	}
	if d.OriginalSize > 0 {
		hdr.Set("Content-Length", strconv.FormatInt(d.OriginalSize, 10))
	}
	w.WriteHeader(http.StatusOK)
	// An error now can only cut the stream: the client sees fewer bytes
	// than Content-Length (or a broken chunked body).
	_, _ = io.CopyBuffer(w, dec, make([]byte, copyBuffer))
}

// storeStatus maps a store error of a dump to its status.
func storeStatus(dest Destination, name string, err error) *apierrors.StatusError {
	var se *apierrors.StatusError
	switch {
	case errors.As(err, &se):
		return se
	case errors.Is(err, storage.ErrNotExist):
		return apierrors.NewNotFound(resource, name)
	default:
		return unavailable(dest, err).(*apierrors.StatusError)
	}
}

// rangeReader is an io.ReadSeeker over a stored object that opens a ranged
// GET on the first Read after a Seek, so http.ServeContent streams any
// Range without reading what it skips.
type rangeReader struct {
	ctx  context.Context
	open func(ctx context.Context, off, n int64) (io.ReadCloser, error)
	size int64
	pos  int64
	rc   io.ReadCloser
	err  error // the first open error, for errorMapper
}

func (r *rangeReader) Seek(off int64, whence int) (int64, error) {
	var p int64
	switch whence {
	case io.SeekStart:
		p = off
	case io.SeekCurrent:
		p = r.pos + off
	case io.SeekEnd:
		p = r.size + off
	default:
		return 0, errors.New("seek: invalid whence")
	}
	if p < 0 {
		return 0, errors.New("seek: negative position")
	}
	if p != r.pos && r.rc != nil {
		r.rc.Close()
		r.rc = nil
	}
	r.pos = p
	return p, nil
}

func (r *rangeReader) Read(b []byte) (int, error) {
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if r.rc == nil {
		rc, err := r.open(r.ctx, r.pos, r.size-r.pos)
		if err != nil {
			if r.err == nil {
				r.err = err
			}
			return 0, err
		}
		r.rc = rc
	}
	n, err := r.rc.Read(b)
	r.pos += int64(n)
	if err == io.EOF && r.pos < r.size {
		err = io.ErrUnexpectedEOF // the object shrank under us
	}
	return n, err
}

func (r *rangeReader) Close() error {
	if r.rc != nil {
		return r.rc.Close()
	}
	return nil
}

// errorMapper holds back the status ServeContent writes until the first
// byte of the body, so that a store that fails on the first read (it went
// away, the object was deleted since Connect) gets a JSON Status instead of
// a 200 with an empty body. finish must be called after ServeContent.
type errorMapper struct {
	http.ResponseWriter
	rs      *rangeReader
	pending int // status not yet written, 0 once written
}

func (e *errorMapper) WriteHeader(code int) {
	if e.pending == 0 {
		e.pending = code
	}
}

func (e *errorMapper) Write(b []byte) (int, error) {
	e.flush()
	return e.ResponseWriter.Write(b)
}

func (e *errorMapper) flush() {
	if e.pending > 0 {
		e.ResponseWriter.WriteHeader(e.pending)
		e.pending = -1
	}
}

func (e *errorMapper) finish(name string, dest Destination) {
	if e.pending > 0 && e.rs.err != nil {
		for _, h := range []string{"Content-Range", "Content-Disposition", "ETag", HeaderSHA256} {
			e.Header().Del(h)
		}
		writeError(e.ResponseWriter, storeStatus(dest, name, e.rs.err))
		e.pending = -1
		return
	}
	e.flush()
}

// Unwrap lets http.ResponseController reach the Flusher.
func (e *errorMapper) Unwrap() http.ResponseWriter { return e.ResponseWriter }

// PresignREST is the dumps/presign subresource: GET returns a short-lived
// URL of the stored bytes (S3 only, when enabled).
type PresignREST struct{ stores *Stores }

// NewPresignREST returns the presign subresource.
func NewPresignREST(stores *Stores) *PresignREST { return &PresignREST{stores: stores} }

var _ rest.Connecter = (*PresignREST)(nil)

// New implements rest.Storage.
func (r *PresignREST) New() runtime.Object { return &v1alpha1.Dump{} }

// Destroy implements rest.Storage.
func (r *PresignREST) Destroy() {}

// ConnectMethods implements rest.Connecter.
func (r *PresignREST) ConnectMethods() []string { return []string{http.MethodGet} }

// NewConnectOptions implements rest.Connecter.
func (r *PresignREST) NewConnectOptions() (runtime.Object, bool, string) { return nil, false, "" }

func methodNotAllowed(msg string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusMethodNotAllowed, Reason: metav1.StatusReasonMethodNotAllowed, Message: msg,
	}}
}

// Connect implements rest.Connecter.
func (r *PresignREST) Connect(ctx context.Context, name string, _ runtime.Object, _ rest.Responder) (http.Handler, error) {
	ns, ok := genericapirequest.NamespaceFrom(ctx)
	if !ok || ns == "" {
		return nil, apierrors.NewBadRequest("a namespace is required to presign a dump")
	}
	if r.stores.PresignExpiry <= 0 {
		return nil, methodNotAllowed("presigned URLs are turned off in the dumps API configuration (presign.enabled); download through the API instead (dumps/download)")
	}
	f, err := r.stores.find(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	if f.dest.Presigner == nil {
		return nil, methodNotAllowed(fmt.Sprintf("dump %s is in destination %q, which cannot presign URLs (only s3:// can); download through the API instead (dumps/download)", name, f.dest.Name))
	}
	expires := r.stores.now().Add(r.stores.PresignExpiry)
	u, err := f.dest.Presigner.PresignGet(ctx, f.key, r.stores.PresignExpiry)
	if err != nil {
		return nil, unavailable(f.dest, err)
	}
	body, err := json.Marshal(v1alpha1.PresignedURL{URL: u.String(), Expires: metav1.NewTime(expires.UTC().Truncate(time.Second))})
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(body)
	}), nil
}
