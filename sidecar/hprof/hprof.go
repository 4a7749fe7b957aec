// Package hprof checks the structure of Java heap dump files (HPROF, raw or
// gzip-compressed as HotSpot writes them with -XX:HeapDumpGzipLevel) to tell a
// finished dump from one that was cut short: a JVM killed while dumping, a
// disk that filled up, or a file found half-written after a sidecar restart.
//
// Inspect never decodes the heap itself. For a raw dump it reads only the
// 9-byte header of each top-level record and seeks over the bodies, so a
// multi-gigabyte dump is checked in milliseconds. A gzip dump has to be
// decompressed to be checked; it is streamed, never held in memory.
package hprof

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/dumpcatcher/dumpcatcher/sidecar/dumpfile"
)

// Format is the encoding of a heap dump file.
type Format string

const (
	// FormatRaw is a plain HPROF file.
	FormatRaw Format = "hprof"
	// FormatGzip is an HPROF file compressed with gzip; HotSpot writes one
	// gzip member per block (1 MiB by default).
	FormatGzip Format = "hprof+gzip"
)

// ErrNotHeapDump is wrapped by the errors Inspect returns for content that is
// not a heap dump at all (wrong magic, unknown version, bad identifier size).
var ErrNotHeapDump = errors.New("not a heap dump")

// Top-level record tags (see the HPROF format in HotSpot's heapDumper.cpp).
const (
	TagUTF8            = 0x01
	TagLoadClass       = 0x02
	TagUnloadClass     = 0x03
	TagFrame           = 0x04
	TagTrace           = 0x05
	TagAllocSites      = 0x06
	TagHeapSummary     = 0x07
	TagStartThread     = 0x0A
	TagEndThread       = 0x0B
	TagHeapDump        = 0x0C
	TagCPUSamples      = 0x0D
	TagControlSettings = 0x0E
	TagHeapDumpSegment = 0x1C
	TagHeapDumpEnd     = 0x2C
)

func knownTag(tag byte) bool {
	switch tag {
	case TagUTF8, TagLoadClass, TagUnloadClass, TagFrame, TagTrace, TagAllocSites, TagHeapSummary,
		TagStartThread, TagEndThread, TagHeapDump, TagCPUSamples, TagControlSettings,
		TagHeapDumpSegment, TagHeapDumpEnd:
		return true
	}
	return false
}

const (
	magicPrefix  = "JAVA PROFILE 1.0."
	versionLen   = len(magicPrefix) + 2 // "JAVA PROFILE 1.0.x" + NUL
	headerLen    = versionLen + 4 + 8   // + u4 identifier size + u8 timestamp
	recordHeader = 1 + 4 + 4            // u1 tag, u4 time, u4 length
)

// Report describes the structure found in a heap dump file.
type Report struct {
	// Format is raw or gzip.
	Format Format
	// Size is the size of the file in bytes (compressed size for gzip).
	Size int64
	// Version is the header string, e.g. "JAVA PROFILE 1.0.2"; empty when the
	// header could not be read completely.
	Version string
	// IDSize is the identifier size (4 or 8); 0 when the header is cut.
	IDSize int
	// Timestamp is the dump time written in the header.
	Timestamp time.Time
	// HeaderValid says that a complete and valid HPROF header was read
	// (for gzip: from the decompressed stream).
	HeaderValid bool
	// Records counts the complete top-level records walked.
	Records int
	// Segmented says that HEAP DUMP SEGMENT records were seen; such a dump
	// must end with a HEAP DUMP END record.
	Segmented bool
	// Uncompressed is the number of HPROF bytes walked (for gzip: the
	// decompressed size up to where the check stopped).
	Uncompressed int64
	// Members counts the complete gzip members (0 for raw dumps).
	Members int
	// Complete says that the dump is whole: the record walk ends exactly at
	// the end of the data, a segmented dump ends with HEAP DUMP END, and for
	// gzip every member has a valid trailer.
	Complete bool
	// Truncated says that the data ends too early: inside the header, inside
	// a record, before HEAP DUMP END, or inside a gzip member.
	Truncated bool
	// Reason explains why the dump is not complete (empty when it is).
	Reason string
}

// InspectFile opens path and inspects it. The file may be an untrusted
// app's: it is opened with dumpfile.Open (a symbolic link is not followed, a
// FIFO or device does not block), anything but a regular file is refused with
// an error wrapping dumpfile.ErrNotRegular, and only the size fstat reported
// at the open is read.
func InspectFile(path string) (Report, error) {
	return dumpfile.Inspect(path, Inspect)
}

// Inspect checks the heap dump of the given size readable through r.
//
// A dump that is merely incomplete (cut, or corrupt after a valid header) is
// not an error: the Report says why (Complete false, Reason, and Truncated
// when the data ends early). An empty file is reported as truncated. Inspect
// returns an error wrapping ErrNotHeapDump when the content is not a heap
// dump, and other errors when reading fails.
func Inspect(r io.ReaderAt, size int64) (Report, error) {
	rep := Report{Format: FormatRaw, Size: size}
	if size <= 0 {
		rep.Truncated = true
		rep.Reason = "empty file"
		return rep, nil
	}
	var magic [2]byte
	n, err := r.ReadAt(magic[:], 0)
	if n < len(magic) && err != nil && err != io.EOF {
		return rep, err
	}
	if n == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		rep.Format = FormatGzip
		return inspectGzip(r, size, rep)
	}
	if size < 2 && magic[0] == 0x1f { // a one-byte prefix of a gzip stream
		rep.Truncated = true
		rep.Reason = "file ends inside the gzip header"
		return rep, nil
	}
	w := &window{r: r, size: size, buf: make([]byte, 64<<10)}
	return walkRaw(w, size, rep)
}

// parseHeader checks the HPROF header in b, which holds the first
// min(headerLen, available) bytes. It fills rep and reports whether the
// header is complete; a prefix of a valid header is not an error.
func parseHeader(b []byte, rep *Report) (complete bool, err error) {
	n := min(len(b), len(magicPrefix))
	if !bytes.Equal(b[:n], []byte(magicPrefix)[:n]) {
		return false, fmt.Errorf("%w: the file does not start with %q (starts with %q)", ErrNotHeapDump, magicPrefix, printable(b[:min(len(b), versionLen)]))
	}
	if len(b) > len(magicPrefix) {
		if v := b[len(magicPrefix)]; v != '1' && v != '2' && v != '3' {
			return false, fmt.Errorf("%w: unknown HPROF version %q", ErrNotHeapDump, printable(b[:min(len(b), versionLen)]))
		}
	}
	if len(b) > versionLen-1 && b[versionLen-1] != 0 {
		return false, fmt.Errorf("%w: HPROF version string not NUL-terminated", ErrNotHeapDump)
	}
	if len(b) < headerLen {
		rep.Truncated = true
		rep.Reason = fmt.Sprintf("file ends inside the HPROF header (%d of %d bytes)", len(b), headerLen)
		return false, nil
	}
	rep.Version = string(b[:versionLen-1])
	id := binary.BigEndian.Uint32(b[versionLen:])
	if id != 4 && id != 8 {
		return false, fmt.Errorf("%w: identifier size %d (want 4 or 8)", ErrNotHeapDump, id)
	}
	rep.IDSize = int(id)
	rep.Timestamp = time.UnixMilli(int64(binary.BigEndian.Uint64(b[versionLen+4:])))
	rep.HeaderValid = true
	return true, nil
}

func printable(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			c = '.'
		}
		out[i] = c
	}
	return string(out)
}

// walkRaw walks the records of a raw dump by reading their headers only.
func walkRaw(w *window, size int64, rep Report) (Report, error) {
	hb, err := w.at(0, int(min(int64(headerLen), size)))
	if err != nil {
		return rep, err
	}
	ok, err := parseHeader(hb, &rep)
	if err != nil || !ok {
		return rep, err
	}
	off := int64(headerLen)
	var t tally
	for off < size {
		if size-off < recordHeader {
			rep.Uncompressed = off
			return truncated(rep, fmt.Sprintf("file ends inside the header of record %d at offset %d", rep.Records+1, off)), nil
		}
		b, err := w.at(off, recordHeader)
		if err != nil {
			return rep, err
		}
		tag, length := b[0], int64(binary.BigEndian.Uint32(b[5:]))
		if !knownTag(tag) {
			rep.Uncompressed = off
			rep.Reason = fmt.Sprintf("unknown record tag 0x%02x at offset %d (record %d): corrupt data", tag, off, rep.Records+1)
			return rep, nil
		}
		if end := off + recordHeader + length; end > size {
			rep.Uncompressed = off
			return truncated(rep, fmt.Sprintf("file ends inside record %d (tag 0x%02x) at offset %d: %d of %d body bytes present",
				rep.Records+1, tag, off, size-off-recordHeader, length)), nil
		}
		t.add(&rep, tag)
		off += recordHeader + length
	}
	rep.Uncompressed = off
	return t.finish(rep), nil
}

// tally is what both walkers learn from the complete records they pass.
type tally struct {
	last     byte
	heapDump bool
}

func (t *tally) add(rep *Report, tag byte) {
	switch tag {
	case TagHeapDumpSegment:
		rep.Segmented = true
	case TagHeapDump:
		t.heapDump = true
	}
	t.last = tag
	rep.Records++
}

func (t tally) finish(rep Report) Report { return finish(rep, t.last, t.heapDump) }

func truncated(rep Report, reason string) Report {
	rep.Truncated = true
	rep.Reason = reason
	return rep
}

// finish decides completeness once the walk reached the end of the data
// exactly at a record boundary.
func finish(rep Report, last byte, heapDump bool) Report {
	if rep.Segmented && last != TagHeapDumpEnd {
		return truncated(rep, fmt.Sprintf("segmented dump without HEAP DUMP END after %d records (cut at a record boundary)", rep.Records))
	}
	if !rep.Segmented && !heapDump {
		return truncated(rep, fmt.Sprintf("no HEAP DUMP or HEAP DUMP SEGMENT record in %d records (cut before the heap)", rep.Records))
	}
	rep.Complete = true
	return rep
}

// window serves small reads at increasing offsets from one buffered ReadAt,
// so walking many small records costs few system calls.
type window struct {
	r     io.ReaderAt
	size  int64
	buf   []byte
	start int64
	n     int
}

func (w *window) at(off int64, n int) ([]byte, error) {
	if off >= w.start && off+int64(n) <= w.start+int64(w.n) {
		i := int(off - w.start)
		return w.buf[i : i+n], nil
	}
	// After a jump over a large body (a heap dump segment) the next record
	// header is likely followed by another large body: read a page, not a
	// whole window, so that a cold page cache is not made to read ahead
	// data that is skipped anyway.
	fill := int64(len(w.buf))
	if w.n > 0 && off > w.start+int64(w.n)+int64(len(w.buf)) {
		fill = 4 << 10
	}
	want := int(min(fill, w.size-off))
	got, err := w.r.ReadAt(w.buf[:want], off)
	if got < n {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read at offset %d: %w", off, err)
	}
	w.start, w.n = off, got
	return w.buf[:n], nil
}

// inspectGzip decompresses every gzip member and walks the HPROF records in
// the decompressed stream.
func inspectGzip(r io.ReaderAt, size int64, rep Report) (Report, error) {
	src := &errReader{r: io.NewSectionReader(r, 0, size)}
	ms := &members{br: bufio.NewReaderSize(src, 256<<10)}
	stream := bufio.NewReaderSize(ms, 256<<10)
	failed := func() error { return ms.err }
	walkErr := walkStream(stream, &rep, failed)
	if walkErr == nil && ms.err == nil && !ms.eof {
		// The HPROF walk ended (complete or not) before the compressed
		// data did: decompress the rest to validate every trailer.
		_, _ = io.Copy(io.Discard, stream)
	}
	rep.Members = ms.members
	if src.err != nil {
		return rep, fmt.Errorf("read: %w", src.err)
	}
	if walkErr != nil {
		return rep, walkErr
	}
	if ms.err != nil {
		rep.Complete = false
		rep.Truncated = errors.Is(ms.err, io.ErrUnexpectedEOF)
		if rep.Truncated {
			rep.Reason = fmt.Sprintf("gzip data cut inside member %d", ms.members+1)
		} else {
			rep.Reason = fmt.Sprintf("gzip member %d: %v", ms.members+1, ms.err)
		}
	}
	return rep, nil
}

// errReader keeps the first read error other than io.EOF, so that I/O errors
// are told apart from bad compressed data.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// members reads the concatenated gzip members of a stream, counting them and
// keeping the first decompression error apart from the clean end of the last
// member.
type members struct {
	br      *bufio.Reader
	z       *gzip.Reader
	members int
	eof     bool
	err     error
}

func (m *members) Read(p []byte) (int, error) {
	for {
		if m.err != nil {
			return 0, m.err
		}
		if m.eof {
			return 0, io.EOF
		}
		if m.z == nil {
			if _, err := m.br.Peek(1); err != nil {
				if err == io.EOF && m.members > 0 {
					m.eof = true
				} else {
					m.err = unexpected(err)
				}
				continue
			}
			z, err := gzip.NewReader(m.br)
			if err != nil {
				m.err = unexpected(err)
				continue
			}
			z.Multistream(false)
			m.z = z
		}
		n, err := m.z.Read(p)
		switch {
		case err == io.EOF:
			m.members++
			m.z = nil
		case err != nil:
			m.err = unexpected(err)
		}
		if n > 0 {
			return n, nil
		}
	}
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// walkStream walks the HPROF records of a decompressed stream and fills rep.
// It stops quietly when failed() reports a decompression error (the caller
// reports it) and returns only format errors (ErrNotHeapDump).
func walkStream(s *bufio.Reader, rep *Report, failed func() error) error {
	var hb [headerLen]byte
	n, _ := io.ReadFull(s, hb[:])
	ok, err := parseHeader(hb[:n], rep)
	if err != nil {
		return err
	}
	rep.Uncompressed = int64(n)
	if !ok {
		rep.Reason = "decompressed data ends inside the HPROF header"
		return nil
	}
	off := int64(headerLen)
	var t tally
	var rh [recordHeader]byte
	for {
		n, err := io.ReadFull(s, rh[:])
		if err != nil {
			rep.Uncompressed = off + int64(n)
			switch {
			case failed() != nil:
			case err == io.EOF:
				*rep = t.finish(*rep)
			default:
				*rep = truncated(*rep, fmt.Sprintf("decompressed data ends inside the header of record %d at offset %d", rep.Records+1, off))
			}
			return nil
		}
		tag, length := rh[0], int64(binary.BigEndian.Uint32(rh[5:]))
		if !knownTag(tag) {
			rep.Uncompressed = off
			rep.Reason = fmt.Sprintf("unknown record tag 0x%02x at decompressed offset %d (record %d): corrupt data", tag, off, rep.Records+1)
			return nil
		}
		d, err := s.Discard(int(length))
		if err != nil {
			rep.Uncompressed = off + recordHeader + int64(d)
			if failed() == nil {
				*rep = truncated(*rep, fmt.Sprintf("decompressed data ends inside record %d (tag 0x%02x) at offset %d: %d of %d body bytes present",
					rep.Records+1, tag, off, d, length))
			}
			return nil
		}
		t.add(rep, tag)
		off += recordHeader + length
		rep.Uncompressed = off
	}
}
