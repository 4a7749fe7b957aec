// Package dumpfile opens the files an app container leaves in its dump
// directory. The app container is not trusted: whatever it can create there
// (a symbolic link to a file only the uploader can read, a link to /dev/zero,
// a FIFO nobody writes to, a socket, a device node, a sparse file of many
// terabytes) must neither be read on its behalf nor block the reader.
//
// Open therefore opens with O_NOFOLLOW (a link in the last path component
// fails with ELOOP instead of being followed) and O_NONBLOCK (opening a FIFO
// or a device returns at once instead of waiting for a writer), then checks
// with fstat that the descriptor it got is a regular file. Callers keep that
// descriptor and read only from it: a path is looked up once, so a file
// renamed over the path afterwards is never read. Identity (device and
// inode) lets a caller check that the file it opened is the one it saw
// before.
package dumpfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotRegular is wrapped by the errors of Open for anything that is not a
// regular file: a symbolic link, a directory, a FIFO, a socket or a device.
var ErrNotRegular = errors.New("not a regular file")

// Identity names one file: its device and inode numbers.
type Identity struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

// IsZero says that no identity is known.
func (i Identity) IsZero() bool { return i == Identity{} }

func (i Identity) String() string { return fmt.Sprintf("dev %d inode %d", i.Dev, i.Ino) }

// Info is what fstat (or lstat) said about a file.
type Info struct {
	Identity
	// Mode is the file's type and permissions.
	Mode fs.FileMode
	// Size is the apparent size in bytes.
	Size int64
	// Allocated is the space the file system allocated for it, in bytes
	// (st_blocks × 512).
	Allocated int64
	// ModTime is the last modification time.
	ModTime time.Time
}

func infoOf(st *unix.Stat_t) Info {
	return Info{
		Identity:  Identity{Dev: uint64(st.Dev), Ino: st.Ino},
		Mode:      fileMode(st.Mode),
		Size:      st.Size,
		Allocated: st.Blocks * 512,
		ModTime:   time.Unix(st.Mtim.Unix()),
	}
}

// fileMode converts st_mode as os.Stat does.
func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	}
	if m&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// Kind names the type of a file for log lines: "regular file", "symbolic
// link", "FIFO", "socket", "device", "directory".
func Kind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	case m.IsDir():
		return "directory"
	}
	return "irregular file"
}

// NotRegularError says what was found instead of a regular file. It wraps
// ErrNotRegular.
type NotRegularError struct {
	Path string
	// Kind is what the file is (see Kind).
	Kind string
}

func (e *NotRegularError) Error() string {
	return fmt.Sprintf("%s: %s (a %s)", e.Path, ErrNotRegular, e.Kind)
}

func (e *NotRegularError) Unwrap() error { return ErrNotRegular }

// Open opens path for reading, without following a symbolic link in its last
// component and without blocking on a FIFO or device, and returns the file
// only when the descriptor is a regular file. Errors: an *os.PathError
// wrapping fs.ErrNotExist or fs.ErrPermission as os.Open would, or a
// *NotRegularError (wrapping ErrNotRegular) for links, FIFOs, sockets,
// devices and directories.
//
// The returned file reads normally (O_NONBLOCK is cleared); its Info comes
// from fstat of the very descriptor returned.
func Open(path string) (*os.File, Info, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	for errors.Is(err, unix.EINTR) {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		switch {
		case errors.Is(err, unix.ELOOP):
			return nil, Info{}, &NotRegularError{Path: path, Kind: "symbolic link"}
		case errors.Is(err, unix.ENXIO):
			// A socket (or a device without a driver) cannot be opened.
			kind := "socket"
			if info, lerr := Lstat(path); lerr == nil {
				kind = Kind(info.Mode)
			}
			return nil, Info{}, &NotRegularError{Path: path, Kind: kind}
		}
		return nil, Info{}, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, Info{}, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	info := infoOf(&st)
	if !info.Mode.IsRegular() {
		unix.Close(fd)
		return nil, Info{}, &NotRegularError{Path: path, Kind: Kind(info.Mode)}
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, Info{}, &os.PathError{Op: "fcntl", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), info, nil
}

// Stat is fstat of an open file.
func Stat(f *os.File) (Info, error) {
	var st unix.Stat_t
	sc, err := f.SyscallConn()
	if err != nil {
		return Info{}, err
	}
	var serr error
	if err := sc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		return Info{}, err
	}
	if serr != nil {
		return Info{}, &os.PathError{Op: "fstat", Path: f.Name(), Err: serr}
	}
	return infoOf(&st), nil
}

// Lstat describes path itself (a link is not followed).
func Lstat(path string) (Info, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return Info{}, &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	return infoOf(&st), nil
}

// Sparse thresholds: see Sparse.
const (
	// SparseRatio: a file is sparse when less than 1/SparseRatio of its
	// apparent size is allocated ...
	SparseRatio = 8
	// SparseSlack: ... and at least this many bytes are not allocated.
	SparseSlack = 64 << 20
)

// Sparse says that far less space is allocated to the file than its size:
// less than 1/SparseRatio of it, with at least SparseSlack bytes missing.
// A heap dump is written front to back and is never sparse; a sparse file
// in a dump directory is a file made with truncate or a seek past the end.
// Its holes do not count against an emptyDir's sizeLimit, and uploading
// terabytes of holes would keep the uploader busy for hours. The margin
// leaves room for file systems whose st_blocks is approximate (delayed
// allocation counts, metadata blocks) and for moderate transparent
// compression; a file system that compresses a dump more than SparseRatio
// times (ZFS with compression and zero-block elimination) would make a real
// dump look sparse.
func Sparse(i Info) bool {
	return i.Allocated < i.Size/SparseRatio && i.Size-i.Allocated >= SparseSlack
}

// Inspect opens path with Open and runs inspect on the open file, for at
// most the size fstat reported at the open; an error of inspect names path.
// The structure checks of heap dumps, crash logs and core files
// (sidecar/hprof, sidecar/hserr, sidecar/elfcore) open files through it.
func Inspect[R any](path string, inspect func(r io.ReaderAt, size int64) (R, error)) (R, error) {
	f, info, err := Open(path)
	if err != nil {
		var zero R
		return zero, err
	}
	defer f.Close()
	rep, err := inspect(f, info.Size)
	if err != nil {
		return rep, fmt.Errorf("%s: %w", path, err)
	}
	return rep, nil
}
