package uploader

import (
	"bufio"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression modes.
const (
	CompressionGzip = "gzip"
	CompressionZstd = "zstd"
	CompressionNone = "none"
)

// Compressions lists the modes in documentation order.
func Compressions() []string { return []string{CompressionGzip, CompressionZstd, CompressionNone} }

// encoding is how one dump is sent.
type encoding struct {
	// name is the Content-Encoding and the metadata value: gzip, zstd or
	// identity.
	name string
	// suffix is added to the file name in the object key.
	suffix string
	// wrap returns the compressing writer (nil: copy as is).
	wrap func(io.Writer) (io.WriteCloser, error)
}

// chooseEncoding picks how to send a dump whose first bytes are head: files
// the JVM already gzipped (-XX:HeapDumpGzipLevel) go as they are.
func chooseEncoding(mode string, head []byte, file string) (encoding, error) {
	if len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b {
		e := encoding{name: "gzip"}
		if !hasSuffix(file, ".gz") {
			e.suffix = ".gz"
		}
		return e, nil
	}
	switch mode {
	case CompressionGzip:
		// Level 1: heap dumps shrink 5-10x even at the fastest level, and the
		// uploader must keep up with the network on a small CPU budget.
		return encoding{name: "gzip", suffix: ".gz", wrap: func(w io.Writer) (io.WriteCloser, error) {
			return gzip.NewWriterLevel(w, gzip.BestSpeed)
		}}, nil
	case CompressionZstd:
		return encoding{name: "zstd", suffix: ".zst", wrap: func(w io.Writer) (io.WriteCloser, error) {
			// One encoder goroutine and a small window keep memory bounded.
			return zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20))
		}}, nil
	case CompressionNone:
		return encoding{name: "identity"}, nil
	}
	return encoding{}, fmt.Errorf("compression %q is not one of gzip, zstd, none", mode)
}

func hasSuffix(s, suf string) bool { return len(s) >= len(suf) && s[len(s)-len(suf):] == suf }

// countingWriter counts bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// bufferedWriter flushes a bufio.Writer on Close.
type bufferedWriter struct{ *bufio.Writer }

func (b bufferedWriter) Close() error { return b.Flush() }
