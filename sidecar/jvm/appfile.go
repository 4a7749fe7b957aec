package jvm

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// The files this package reads belong to the app: its hsperfdata, its /proc
// entries, its attach socket. A hostile app can put a symbolic link, a FIFO
// or a device where a file is expected, or a file of any size, so they are
// opened without following a link in the last component and without
// blocking (a FIFO would block open until a writer comes), only regular
// files are read, and only up to a limit.

// errTooLarge says that a file is larger than what it may hold.
var errTooLarge = errors.New("larger than expected")

// Limits of what is read from the app's files.
const (
	// maxStatusSize bounds /proc/<pid>/status (about 1.5 KiB, more with
	// many supplementary groups).
	maxStatusSize = 1 << 20
	// maxArgsSize bounds what is read of /proc/<pid>/cmdline and environ:
	// the kernel's limit on arguments and environment is 2 MiB by default;
	// a longer one is cut (the options that matter come first).
	maxArgsSize = 4 << 20
	// maxMapsSize bounds what is scanned of /proc/<pid>/maps.
	maxMapsSize = 64 << 20
)

// openFlags open a file of the app's for reading.
const openFlags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC

// openRegularAt opens name relative to the directory dirfd (unix.AT_FDCWD:
// the working directory) and checks that what it opened is a regular file.
// A symbolic link, a FIFO, a socket, a device or a directory is refused
// without reading; the error then says "not a regular file".
func openRegularAt(dirfd int, name string) (*os.File, unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := unix.Openat(dirfd, name, openFlags, 0)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENXIO) {
		// ELOOP: a symbolic link; ENXIO: a socket.
		return nil, st, fmt.Errorf("%s: not a regular file (%v); not reading it", name, err)
	}
	if err != nil {
		return nil, st, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, st, &fs.PathError{Op: "fstat", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, st, fmt.Errorf("%s: not a regular file (mode %#o); not reading it", name, st.Mode)
	}
	return os.NewFile(uintptr(fd), name), st, nil
}

// readRegular reads the open regular file f of size st.Size up to max
// bytes. A file that claims or turns out to hold more is refused with
// errTooLarge unless cut is set: then its first max bytes are returned.
// procfs files claim a size of 0 and are read until their end.
func readRegular(f *os.File, st unix.Stat_t, max int64, cut bool) ([]byte, error) {
	if st.Size > max && !cut {
		return nil, fmt.Errorf("%s: %d bytes: %w (at most %d)", f.Name(), st.Size, errTooLarge, max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		if !cut {
			return nil, fmt.Errorf("%s: more than %d bytes: %w", f.Name(), max, errTooLarge)
		}
		b = b[:max]
	}
	return b, nil
}

// readAppFile reads the regular file at path (not a link to one) of at most
// max bytes; see openRegularAt and readRegular.
func readAppFile(path string, max int64) ([]byte, error) {
	f, st, err := openRegularAt(unix.AT_FDCWD, path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readRegular(f, st, max, false)
}

// readAppPrefix reads the first max bytes of the regular file at path.
func readAppPrefix(path string, max int64) ([]byte, error) {
	f, st, err := openRegularAt(unix.AT_FDCWD, path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readRegular(f, st, max, true)
}
