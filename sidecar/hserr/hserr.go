// Package hserr checks JVM crash logs (hs_err_pid<pid>.log, written by
// HotSpot when the JVM dies of a fatal error) to tell a finished log from one
// still being written or cut short.
//
// HotSpot writes the log section by section and ends it with a line "END."
// before it closes the file; a JVM killed while writing it (or a full disk)
// leaves a log without that line. Inspect reads only the first and the last
// bytes of the file, never the whole log.
package hserr

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/dumpcatcher/dumpcatcher/sidecar/dumpfile"
)

// ErrNotCrashLog is wrapped by the errors Inspect returns for content that
// is not a HotSpot crash log (it does not start with "#").
var ErrNotCrashLog = errors.New("not a JVM crash log")

// Header is how every HotSpot crash log since JDK 6 starts.
const Header = "#\n# A fatal error has been detected by the Java Runtime Environment"

// EndMarker is the last line HotSpot writes into a crash log.
const EndMarker = "END."

// tailLen is how much of the end of the file is read: the marker with the
// line ends around it, and trailing white space.
const tailLen = 64

// Report describes a crash log file.
type Report struct {
	// Size is the file's size in bytes.
	Size int64
	// HeaderValid says that the file starts with Header.
	HeaderValid bool
	// Complete says that the log ends with HotSpot's "END." line.
	Complete bool
	// Truncated says that the log stops before that line (still being
	// written, or its writer died).
	Truncated bool
	// Reason explains why the log is not complete (empty when it is).
	Reason string
}

// InspectFile opens path with dumpfile.Open (no link is followed, a FIFO or
// device does not block, anything but a regular file is refused with an
// error wrapping dumpfile.ErrNotRegular) and inspects it.
func InspectFile(path string) (Report, error) {
	return dumpfile.Inspect(path, Inspect)
}

// Inspect checks the crash log of the given size readable through r. It
// reads at most len(Header) bytes at the start and tailLen at the end.
//
// A log that is merely unfinished is not an error: the Report says why
// (Complete false, Truncated, Reason). An empty file is reported as
// truncated (HotSpot creates the file before writing). Inspect returns an
// error wrapping ErrNotCrashLog when the content cannot be a crash log, and
// other errors when reading fails.
func Inspect(r io.ReaderAt, size int64) (Report, error) {
	rep := Report{Size: size}
	if size <= 0 {
		return truncated(rep, "empty file"), nil
	}
	head := make([]byte, min(int64(len(Header)), size))
	if err := readFull(r, head, 0); err != nil {
		return rep, err
	}
	if !bytes.HasPrefix([]byte(Header), head) {
		return rep, fmt.Errorf("%w: it starts with %q, not %q", ErrNotCrashLog, printable(head[:min(len(head), 16)]), "#")
	}
	if len(head) < len(Header) {
		return truncated(rep, "file ends inside the crash log's first line"), nil
	}
	rep.HeaderValid = true
	n := min(int64(tailLen), size)
	tail := make([]byte, n)
	if err := readFull(r, tail, size-n); err != nil {
		return rep, err
	}
	if !bytes.HasSuffix(bytes.TrimRight(tail, " \t\r\n"), []byte("\n"+EndMarker)) {
		return truncated(rep, "the log does not end with HotSpot's last line \""+EndMarker+"\" (still being written, or its writer stopped)"), nil
	}
	rep.Complete = true
	return rep, nil
}

func truncated(rep Report, reason string) Report {
	rep.Truncated = true
	rep.Reason = reason
	return rep
}

// readFull reads len(b) bytes at off; the file was fstat'ed at a size that
// covers them, so a short read means it shrank.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading %d bytes at offset %d: %w", len(b), off, err)
}

// printable shows untrusted bytes safely in an error.
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
