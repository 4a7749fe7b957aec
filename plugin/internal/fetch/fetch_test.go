package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// fake serves ranges of data and records what was asked.
type fake struct {
	data    []byte
	asked   [][2]int64
	cutAt   map[int]int64 // request index -> bytes sent before the body ends
	whole   bool          // answer 200 with everything, ignoring Range
	total   int64         // Content-Range total override (0: len(data))
	errAt   map[int]error
	elapsed time.Duration // each request advances the clock by this
	clock   *time.Time
}

func (f *fake) Fetch(_ context.Context, from, to int64) (*Response, error) {
	i := len(f.asked)
	f.asked = append(f.asked, [2]int64{from, to})
	if f.clock != nil {
		*f.clock = f.clock.Add(f.elapsed)
	}
	if err := f.errAt[i]; err != nil {
		return nil, err
	}
	if f.whole {
		return &Response{Total: int64(len(f.data)), Body: io.NopCloser(bytes.NewReader(f.data))}, nil
	}
	total := int64(len(f.data))
	if f.total != 0 {
		total = f.total
	}
	end := min(to+1, int64(len(f.data)))
	body := f.data[from:end]
	if n, ok := f.cutAt[i]; ok {
		body = body[:n]
	}
	return &Response{Partial: true, Start: from, Total: total, SHA256: "abc", Body: io.NopCloser(bytes.NewReader(body))}, nil
}

func data(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func TestDownload(t *testing.T) {
	for _, tc := range []struct {
		name    string
		f       *fake
		size    int64
		offset  int64
		chunk   int64
		want    [][2]int64 // ranges asked
		wantErr string
		wantOut int64 // bytes written (from offset)
		wantTot int64
	}{
		{name: "chunks, size known", f: &fake{data: data(10)}, size: 10, chunk: 4,
			want: [][2]int64{{0, 3}, {4, 7}, {8, 9}}, wantOut: 10, wantTot: 10},
		{name: "exact multiple", f: &fake{data: data(8)}, size: 8, chunk: 4,
			want: [][2]int64{{0, 3}, {4, 7}}, wantOut: 8, wantTot: 8},
		{name: "size unknown: the first answer tells", f: &fake{data: data(10)}, size: -1, chunk: 4,
			want: [][2]int64{{0, 3}, {4, 7}, {8, 9}}, wantOut: 10, wantTot: 10},
		{name: "resume", f: &fake{data: data(10)}, size: 10, offset: 6, chunk: 4,
			want: [][2]int64{{6, 9}}, wantOut: 4, wantTot: 10},
		{name: "resume of a complete file asks nothing", f: &fake{data: data(10)}, size: 10, offset: 10, chunk: 4,
			want: nil, wantOut: 0, wantTot: 10},
		{name: "empty dump asks nothing", f: &fake{data: nil}, size: 0, chunk: 4, want: nil, wantTot: 0},
		{name: "partial file longer than the dump", f: &fake{data: data(10)}, size: 10, offset: 11, chunk: 4,
			wantErr: "more than the dump's 10"},
		{name: "cut mid-chunk goes on from the cut", f: &fake{data: data(10), cutAt: map[int]int64{1: 2}}, size: 10, chunk: 4,
			want: [][2]int64{{0, 3}, {4, 7}, {6, 9}}, wantOut: 10, wantTot: 10},
		{name: "stalls give up", f: &fake{data: data(10), cutAt: map[int]int64{1: 0, 2: 0, 3: 0}}, size: 10, chunk: 4,
			want: [][2]int64{{0, 3}, {4, 7}, {4, 7}, {4, 7}}, wantErr: "stalled at byte 4"},
		{name: "server ignores Range at 0: whole body", f: &fake{data: data(10), whole: true}, size: 10, chunk: 4,
			want: [][2]int64{{0, 3}}, wantOut: 10, wantTot: 10},
		{name: "server ignores Range on resume", f: &fake{data: data(10), whole: true}, size: 10, offset: 4, chunk: 4,
			want: [][2]int64{{4, 7}}, wantErr: "ignored the Range header"},
		{name: "size changed", f: &fake{data: data(10), total: 12}, size: 10, chunk: 4,
			want: [][2]int64{{0, 3}}, wantErr: "changed during the download"},
		{name: "API error stops", f: &fake{data: data(10), errAt: map[int]error{1: apierrors.NewServiceUnavailable("store")}}, size: 10, chunk: 4,
			want: [][2]int64{{0, 3}, {4, 7}}, wantErr: "store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			res, err := Download(context.Background(), tc.f, Options{Size: tc.size, Offset: tc.offset, Chunk: tc.chunk, Out: &out})
			if diff := cmp.Diff(tc.want, tc.f.asked); diff != "" {
				t.Errorf("ranges asked (-want +got):\n%s", diff)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Download error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Total != tc.wantTot {
				t.Errorf("Total = %d, want %d", res.Total, tc.wantTot)
			}
			if !bytes.Equal(out.Bytes(), tc.f.data[tc.offset:tc.offset+tc.wantOut]) {
				t.Errorf("wrote %d bytes %x, want bytes %d.. of the data", out.Len(), out.Bytes(), tc.offset)
			}
		})
	}
}

func TestDownloadShrinksSlowChunks(t *testing.T) {
	clock := time.Unix(0, 0)
	f := &fake{data: data(8 * MinChunk), clock: &clock, elapsed: 40 * time.Second}
	_, err := Download(context.Background(), f, Options{Size: int64(len(f.data)), Chunk: 4 * MinChunk, Target: 20 * time.Second,
		Out: io.Discard, Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	// 4 MiB took 40 s: the next asks 2 MiB, then 1 MiB (the floor), ...
	want := [][2]int64{{0, 4*MinChunk - 1}, {4 * MinChunk, 6*MinChunk - 1}, {6 * MinChunk, 7*MinChunk - 1}, {7 * MinChunk, 8*MinChunk - 1}}
	if diff := cmp.Diff(want, f.asked); diff != "" {
		t.Errorf("ranges asked (-want +got):\n%s", diff)
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in            string
		from, to, tot int64
		ok            bool
	}{
		{"bytes 0-9/10", 0, 9, 10, true},
		{"bytes 5-5/6", 5, 5, 6, true},
		{"bytes 0-9/*", 0, 9, -1, true},
		{"bytes 0-9/9", 0, 0, 0, false},
		{"bytes 9-0/10", 0, 0, 0, false},
		{"bytes -1-3/10", 0, 0, 0, false},
		{"items 0-9/10", 0, 0, 0, false},
		{"bytes 0-9", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	} {
		from, to, tot, err := ParseContentRange(tc.in)
		if (err == nil) != tc.ok || from != tc.from || to != tc.to || tot != tc.tot {
			t.Errorf("ParseContentRange(%q) = %d, %d, %d, %v; want %d, %d, %d, ok=%v", tc.in, from, to, tot, err, tc.from, tc.to, tc.tot, tc.ok)
		}
	}
}

func TestVerify(t *testing.T) {
	sum := sha256.Sum256([]byte("dump"))
	good := hex.EncodeToString(sum[:])
	for _, tc := range []struct {
		name, field, header, wantErr string
	}{
		{name: "field", field: good},
		{name: "field upper case", field: strings.ToUpper(good)},
		{name: "header only", header: good},
		{name: "both", field: good, header: good},
		{name: "none", wantErr: "not verified"},
		{name: "mismatch", field: strings.Repeat("0", 64), wantErr: "checksum mismatch"},
		{name: "field and header differ", field: good, header: strings.Repeat("1", 64), wantErr: "differ"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(sum[:], tc.field, tc.header)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Verify = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestHashFileResume(t *testing.T) {
	d := data(1000)
	h, err := HashFile(bytes.NewReader(d[:400]), 400)
	if err != nil {
		t.Fatal(err)
	}
	f := &fake{data: d}
	if _, err := Download(context.Background(), f, Options{Size: 1000, Offset: 400, Chunk: 256, Out: io.Discard, Hash: h}); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(d)
	if err := Verify(h.Sum(nil), hex.EncodeToString(want[:]), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := HashFile(bytes.NewReader(d[:10]), 400); err == nil {
		t.Fatal("HashFile of a short file: no error")
	}
}

// TestHTTP runs the HTTP fetcher against a fake of the download path
// (net/http's ServeContent answers the Range requests as the API server
// does) and a fake aggregator 503.
func TestHTTP(t *testing.T) {
	d := data(100_000)
	sum := sha256.Sum256(d)
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(HeaderSHA256, hex.EncodeToString(sum[:]))
		http.ServeContent(w, r, "x.hprof", time.Time{}, bytes.NewReader(d))
	})
	mux.HandleFunc("/aggregator", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"nope","reason":"Forbidden","code":403}`)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	h := sha256.New()
	var out bytes.Buffer
	res, err := Download(context.Background(), HTTP{Client: srv.Client(), URL: srv.URL + "/ok", Name: "d"},
		Options{Size: -1, Chunk: 30_000, Out: &out, Hash: h})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), d) || res.Requests != 4 || res.Total != int64(len(d)) {
		t.Fatalf("downloaded %d bytes in %d requests (total %d), want %d in 4", out.Len(), res.Requests, res.Total, len(d))
	}
	if err := Verify(h.Sum(nil), "", res.SHA256); err != nil {
		t.Fatal(err)
	}

	_, err = HTTP{Client: srv.Client(), URL: srv.URL + "/aggregator", Name: "d"}.Fetch(context.Background(), 0, 9)
	var se *apierrors.StatusError
	if !errors.As(err, &se) || se.ErrStatus.Code != 503 || se.ErrStatus.Details == nil || len(se.ErrStatus.Details.Causes) == 0 {
		t.Fatalf("aggregator 503: %#v, want a StatusError with the body as a cause", err)
	}
	_, err = HTTP{Client: srv.Client(), URL: srv.URL + "/status", Name: "d"}.Fetch(context.Background(), 0, 9)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("Status 403: %v, want the API's Forbidden", err)
	}
}

func TestDownloadProgress(t *testing.T) {
	f := &fake{data: data(10)}
	var got [][2]int64
	_, err := Download(context.Background(), f, Options{Size: 10, Offset: 2, Chunk: 4, Out: io.Discard,
		Progress: func(done, total int64) { got = append(got, [2]int64{done, total}) }})
	if err != nil {
		t.Fatal(err)
	}
	// Once at the start, then per write and after each chunk.
	want := [][2]int64{{2, 10}, {6, 10}, {6, 10}, {10, 10}, {10, 10}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("progress (-want +got):\n%s", diff)
	}
}

type failWriter struct{ after int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, errors.New("disk full")
	}
	f.after -= len(p)
	return len(p), nil
}

func TestDownloadWriteErrorStops(t *testing.T) {
	f := &fake{data: data(10)}
	_, err := Download(context.Background(), f, Options{Size: 10, Chunk: 4, Out: &failWriter{after: 4}})
	if err == nil || !strings.Contains(err.Error(), "disk full") || len(f.asked) != 2 {
		t.Fatalf("Download = %v after %d requests, want 'disk full' after 2 (no retries of a write error)", err, len(f.asked))
	}
}

// hangFetcher sends half of each range, then hangs until the request's
// context ends (a black-holed connection).
type hangFetcher struct {
	data  []byte
	asked int
}

type hangBody struct {
	ctx  context.Context
	data []byte
}

func (b *hangBody) Read(p []byte) (int, error) {
	if len(b.data) > 0 {
		n := copy(p, b.data)
		b.data = b.data[n:]
		return n, nil
	}
	<-b.ctx.Done()
	return 0, b.ctx.Err()
}

func (b *hangBody) Close() error { return nil }

func (f *hangFetcher) Fetch(ctx context.Context, from, to int64) (*Response, error) {
	f.asked++
	to = min(to, int64(len(f.data))-1)
	half := from + (to-from+1+1)/2
	return &Response{Partial: true, Start: from, Total: int64(len(f.data)), Body: &hangBody{ctx: ctx, data: f.data[from:half]}}, nil
}

func TestDownloadRequestTimeoutResumes(t *testing.T) {
	d := data(8)
	f := &hangFetcher{data: d}
	var out bytes.Buffer
	_, err := Download(context.Background(), f, Options{Size: 8, Chunk: 8, RequestTimeout: 10 * time.Millisecond, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	// 8 bytes: 4, then 2, 1, 1 — each hanging request cut after its half.
	if !bytes.Equal(out.Bytes(), d) || f.asked != 4 {
		t.Fatalf("got %x in %d requests, want %x in 4", out.Bytes(), f.asked, d)
	}
}
