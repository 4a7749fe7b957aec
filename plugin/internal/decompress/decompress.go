// Package decompress undoes a Dump's encoding (gzip, zstd) on the client.
package decompress

import (
	"compress/gzip"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// Encodings of a Dump.
const (
	Gzip = "gzip"
	Zstd = "zstd"
	None = "none"
)

// zstdWindow bounds the memory a hostile zstd frame may ask for.
const zstdWindow = 1 << 30

// Reader returns the decompressed bytes of r for encoding. "" and "none"
// return r as is.
func Reader(encoding string, r io.Reader) (io.ReadCloser, error) {
	switch encoding {
	case "", None:
		return io.NopCloser(r), nil
	case Gzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("the dump says gzip but is not: %w", err)
		}
		return zr, nil
	case Zstd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderMaxWindow(zstdWindow), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		return zr.IOReadCloser(), nil
	}
	return nil, fmt.Errorf("the dump's encoding %q is not gzip, zstd or none: download it without --decompress", encoding)
}

// Copy writes the decompressed bytes of r to w.
func Copy(w io.Writer, r io.Reader, encoding string) (int64, error) {
	zr, err := Reader(encoding, r)
	if err != nil {
		return 0, err
	}
	defer zr.Close()
	n, err := io.Copy(w, zr)
	if err != nil {
		return n, fmt.Errorf("decompressing (%s): %w", encoding, err)
	}
	return n, nil
}

// TrimSuffix removes the encoding's file suffix (.gz, .zst) from name.
func TrimSuffix(name, encoding string) string {
	switch encoding {
	case Gzip:
		return strings.TrimSuffix(name, ".gz")
	case Zstd:
		return strings.TrimSuffix(name, ".zst")
	}
	return name
}
