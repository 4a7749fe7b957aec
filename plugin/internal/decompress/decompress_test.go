package decompress

import (
	"bytes"
	"compress/gzip"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestCopy(t *testing.T) {
	plain := bytes.Repeat([]byte("JAVA PROFILE 1.0.2\x00heap"), 1000)
	var gz bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(plain)
	gw.Close()
	zw, _ := zstd.NewWriter(nil)
	zs := zw.EncodeAll(plain, nil)
	zw.Close()
	for _, tc := range []struct {
		name, enc string
		in        []byte
		want      []byte
		wantErr   string
	}{
		{name: "none", enc: "none", in: plain, want: plain},
		{name: "empty encoding", enc: "", in: plain, want: plain},
		{name: "gzip", enc: "gzip", in: gz.Bytes(), want: plain},
		{name: "zstd", enc: "zstd", in: zs, want: plain},
		{name: "gzip that is not", enc: "gzip", in: plain, wantErr: "says gzip but is not"},
		{name: "zstd that is not", enc: "zstd", in: plain, wantErr: "decompressing (zstd)"},
		{name: "truncated gzip", enc: "gzip", in: gz.Bytes()[:gz.Len()/2], wantErr: "decompressing (gzip)"},
		{name: "unknown", enc: "brotli", in: plain, wantErr: `encoding "brotli"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := Copy(&out, bytes.NewReader(tc.in), tc.enc)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Copy error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(out.Bytes(), tc.want) {
				t.Fatalf("Copy = %d bytes, %v; want %d bytes", out.Len(), err, len(tc.want))
			}
		})
	}
}

func TestTrimSuffix(t *testing.T) {
	for _, tc := range []struct{ name, enc, want string }{
		{"a.hprof.gz", "gzip", "a.hprof"},
		{"a.hprof.zst", "zstd", "a.hprof"},
		{"a.hprof.zst", "gzip", "a.hprof.zst"},
		{"a.hprof", "none", "a.hprof"},
	} {
		if got := TrimSuffix(tc.name, tc.enc); got != tc.want {
			t.Errorf("TrimSuffix(%q, %q) = %q, want %q", tc.name, tc.enc, got, tc.want)
		}
	}
}
