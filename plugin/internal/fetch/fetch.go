// Package fetch downloads a Dump's stored bytes in HTTP Range chunks, so
// that no single request through the kube-apiserver comes near its 60 s cut
// of non-long-running requests, resumes a partial download and checks the
// stored SHA-256.
package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
	"time"
)

// Response is one answer of a Fetcher.
type Response struct {
	// Partial is true for a 206 answer (Start and Total then come from
	// Content-Range), false for a 200 one (the whole object from byte 0).
	Partial bool
	Start   int64
	Total   int64 // -1 when unknown
	// SHA256 is the X-Dumpcatcher-Sha256 header (hex), "" when absent.
	SHA256 string
	Body   io.ReadCloser
}

// Fetcher GETs bytes from..to (inclusive) of the stored object.
type Fetcher interface {
	Fetch(ctx context.Context, from, to int64) (*Response, error)
}

// Options of Download.
type Options struct {
	// Size of the stored object (the Dump's size); -1 when unknown (the
	// first answer's Content-Range then tells it).
	Size int64
	// Offset is where a resumed download starts: the bytes before it are
	// already written (and already fed to Hash by the caller).
	Offset int64
	// Chunk is the largest range asked in one request.
	Chunk int64
	// Target is the time one request should take at most: when a chunk
	// takes longer, the next ones shrink in proportion (never below
	// MinChunk), so that a slow link stays clear of the 60 s cut.
	Target time.Duration
	// Out receives the bytes; Hash too when not nil.
	Out  io.Writer
	Hash hash.Hash
	// Progress, when not nil, is called with the bytes done and the total
	// (-1 when unknown) after each write.
	Progress func(done, total int64)
	// RequestTimeout bounds one request with its body (none when zero): a
	// request that hangs is cut and the download goes on from the last
	// byte received.
	RequestTimeout time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// MinChunk is the smallest chunk the adaptation goes down to.
const MinChunk = 1 << 20

// maxStalls is how many chunks in a row may end early without a byte of
// progress before Download gives up.
const maxStalls = 3

// Result of a Download.
type Result struct {
	Total    int64  // bytes of the whole object
	SHA256   string // the X-Dumpcatcher-Sha256 header seen, "" when none
	Requests int
}

// Download writes the object's bytes from o.Offset to its end to o.Out.
func Download(ctx context.Context, f Fetcher, o Options) (Result, error) {
	if o.Chunk <= 0 {
		return Result{}, fmt.Errorf("--chunk-size must be positive, not %d", o.Chunk)
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	w := o.Out
	if o.Hash != nil {
		w = io.MultiWriter(o.Out, o.Hash)
	}
	// A failing write (disk full, a closed pipe) ends the download; a
	// failing read (a cut connection) is resumed.
	var writeErr error
	out := w
	w = writerFunc(func(p []byte) (int, error) {
		n, err := out.Write(p)
		if err != nil {
			writeErr = err
		}
		return n, err
	})
	res := Result{Total: o.Size}
	pos, chunk, stalls := o.Offset, o.Chunk, 0
	if res.Total >= 0 && pos > res.Total {
		return res, fmt.Errorf("the partial file has %d bytes, more than the dump's %d: delete it and download again", pos, res.Total)
	}
	progress := func() {
		if o.Progress != nil {
			o.Progress(pos, res.Total)
		}
	}
	if o.Progress != nil {
		// Report within chunks too, as the bytes arrive.
		base, cur := w, pos
		w = writerFunc(func(p []byte) (int, error) {
			n, err := base.Write(p)
			cur += int64(n)
			o.Progress(cur, res.Total)
			return n, err
		})
	}
	progress()
	for res.Total < 0 || pos < res.Total {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		from, to := Next(pos, res.Total, chunk)
		start := now()
		n, want, err, fatal := one(ctx, f, o.RequestTimeout, from, to, &res, w)
		if fatal != nil {
			return res, fatal
		}
		pos += n
		progress()
		if writeErr != nil {
			return res, fmt.Errorf("writing byte %d: %w", pos, writeErr)
		}
		if want < 0 {
			if err != nil {
				return res, fmt.Errorf("the download broke at byte %d: %w (run the same command again to resume)", pos, err)
			}
			res.Total = pos
			break
		}
		if n < want {
			// The connection was cut (or the body ended early): go on from
			// where it stopped, a bounded number of times without progress.
			if n == 0 {
				stalls++
			} else {
				stalls = 0
			}
			if stalls >= maxStalls {
				why := "the answers ended early"
				if err != nil {
					why = err.Error()
				}
				return res, fmt.Errorf("the download stalled at byte %d: %s (run the same command again to resume)", pos, why)
			}
			continue
		}
		stalls = 0
		chunk = adapt(chunk, n, now().Sub(start), o.Target)
	}
	return res, nil
}

// Next is the range to ask for from pos: at most chunk bytes, not past the
// end when the total is known.
func Next(pos, total, chunk int64) (from, to int64) {
	to = pos + chunk - 1
	if total >= 0 && to > total-1 {
		to = total - 1
	}
	return pos, to
}

// adapt shrinks the chunk when n bytes took longer than target.
func adapt(chunk, n int64, took, target time.Duration) int64 {
	if target <= 0 || took <= target || n <= 0 {
		return chunk
	}
	next := int64(float64(n) * float64(target) / float64(took))
	return max(min(next, chunk), MinChunk)
}

// ParseContentRange parses "bytes FROM-TO/TOTAL" (TOTAL may be "*": -1).
func ParseContentRange(h string) (from, to, total int64, err error) {
	bad := fmt.Errorf("Content-Range %q is not bytes FROM-TO/TOTAL", h)
	rest, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	span, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	a, b, ok := strings.Cut(span, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	if from, err = strconv.ParseInt(a, 10, 64); err != nil || from < 0 {
		return 0, 0, 0, bad
	}
	if to, err = strconv.ParseInt(b, 10, 64); err != nil || to < from {
		return 0, 0, 0, bad
	}
	if tot == "*" {
		return from, to, -1, nil
	}
	if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= to {
		return 0, 0, 0, bad
	}
	return from, to, total, nil
}

// ErrNoChecksum says that neither the Dump nor the server gave a checksum.
var ErrNoChecksum = errors.New("the dump has no stored SHA-256 (sha256 field and X-Dumpcatcher-Sha256 header are empty): not verified")

// Verify compares the SHA-256 of the stored bytes (sum) with the Dump's
// sha256 field or, when that is empty, the header the server sent.
func Verify(sum []byte, field, header string) error {
	want := strings.ToLower(strings.TrimSpace(field))
	if want == "" {
		want = strings.ToLower(strings.TrimSpace(header))
	}
	if want == "" {
		return ErrNoChecksum
	}
	got := hex.EncodeToString(sum)
	if got != want {
		return fmt.Errorf("checksum mismatch: the downloaded bytes have SHA-256 %s, the dump's is %s; delete the file and download again", got, want)
	}
	if field != "" && header != "" && !strings.EqualFold(strings.TrimSpace(field), strings.TrimSpace(header)) {
		return fmt.Errorf("the dump's sha256 field (%s) and the server's X-Dumpcatcher-Sha256 header (%s) differ", field, header)
	}
	return nil
}

// HashFile feeds the first n bytes of r (a partial download) to a new
// SHA-256 and returns it.
func HashFile(r io.Reader, n int64) (hash.Hash, error) {
	h := sha256.New()
	got, err := io.Copy(h, io.LimitReader(r, n))
	if err != nil {
		return nil, err
	}
	if got != n {
		return nil, fmt.Errorf("the partial file shrank: read %d of %d bytes", got, n)
	}
	return h, nil
}

// one asks for bytes from..to and copies the answer to w. It returns the
// bytes copied, the bytes the answer had to carry (-1: all of a 200), the
// error that cut the copy, and a fatal error that ends the download.
func one(ctx context.Context, f Fetcher, timeout time.Duration, from, to int64, res *Result, w io.Writer) (n, want int64, cut, fatal error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	resp, err := f.Fetch(ctx, from, to)
	res.Requests++
	if err != nil {
		return 0, 0, nil, err
	}
	defer resp.Body.Close()
	if resp.SHA256 != "" {
		res.SHA256 = resp.SHA256
	}
	switch {
	case resp.Partial:
		if resp.Start != from {
			return 0, 0, nil, fmt.Errorf("asked for bytes from %d, the server sent from %d", from, resp.Start)
		}
		if resp.Total >= 0 {
			if res.Total >= 0 && resp.Total != res.Total {
				return 0, 0, nil, fmt.Errorf("the dump has %d bytes now, %d before: it changed during the download; download it again", resp.Total, res.Total)
			}
			res.Total = resp.Total
		}
		if res.Total < 0 {
			return 0, 0, nil, errors.New("the server did not say the dump's size (Content-Range total \"*\") and the Dump has none: cannot download in chunks")
		}
		want = min(to, res.Total-1) - from + 1
		n, err = io.Copy(w, io.LimitReader(resp.Body, want))
		return n, want, err, nil
	case from != 0:
		return 0, 0, nil, fmt.Errorf("the server ignored the Range header (answered 200 to bytes=%d-%d): cannot resume or download in chunks", from, to)
	}
	// The whole object in one answer.
	n, err = io.Copy(w, resp.Body)
	return n, -1, err, nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
