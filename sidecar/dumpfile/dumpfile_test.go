package dumpfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, []byte("heap"), 0o600); err != nil {
		t.Fatal(err)
	}
	mk := map[string]func(string) error{
		"regular":     nil,
		"link":        func(p string) error { return os.Symlink(regular, p) },
		"link-zero":   func(p string) error { return os.Symlink("/dev/zero", p) },
		"dangling":    func(p string) error { return os.Symlink(filepath.Join(dir, "nothing"), p) },
		"fifo":        func(p string) error { return syscall.Mkfifo(p, 0o666) },
		"directory":   func(p string) error { return os.Mkdir(p, 0o755) },
		"socket":      bindSocket(t),
		"unreadable":  func(p string) error { return os.WriteFile(p, nil, 0o000) },
		"not-created": func(string) error { return nil },
	}
	for name, f := range mk {
		if f != nil {
			if err := f(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		path string
		kind string // of the NotRegularError; "" for none
		err  error
	}{
		{regular, "", nil},
		{filepath.Join(dir, "link"), "symbolic link", ErrNotRegular},
		{filepath.Join(dir, "link-zero"), "symbolic link", ErrNotRegular},
		{filepath.Join(dir, "dangling"), "symbolic link", ErrNotRegular},
		{filepath.Join(dir, "fifo"), "FIFO", ErrNotRegular},
		{filepath.Join(dir, "directory"), "directory", ErrNotRegular},
		{filepath.Join(dir, "socket"), "socket", ErrNotRegular},
		{"/dev/null", "device", ErrNotRegular},
		{filepath.Join(dir, "not-created"), "", fs.ErrNotExist},
	}
	if os.Getuid() != 0 {
		tests = append(tests, struct {
			path, kind string
			err        error
		}{filepath.Join(dir, "unreadable"), "", fs.ErrPermission})
	}
	for _, tc := range tests {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			start := time.Now()
			f, info, err := Open(tc.path)
			if d := time.Since(start); d > time.Second {
				t.Errorf("Open took %v", d)
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("Open: %v, want %v", err, tc.err)
			}
			var nr *NotRegularError
			if got := errors.As(err, &nr); got != (tc.kind != "") || got && nr.Kind != tc.kind {
				t.Errorf("Open: %v, want kind %q", err, tc.kind)
			}
			if err != nil {
				if f != nil {
					t.Error("a file with an error")
				}
				return
			}
			defer f.Close()
			b, err := io.ReadAll(f)
			if err != nil || string(b) != "heap" {
				t.Errorf("read %q, %v", b, err)
			}
			fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
			if err != nil || fl&unix.O_NONBLOCK != 0 {
				t.Errorf("flags %#x, %v: O_NONBLOCK still set", fl, err)
			}
			lst, err := Lstat(tc.path)
			if err != nil || lst.Identity != info.Identity || info.Size != 4 || !info.Mode.IsRegular() || info.Ino == 0 {
				t.Errorf("Open info %+v, Lstat %+v, %v", info, lst, err)
			}
			st, err := Stat(f)
			if err != nil || st != info {
				t.Errorf("Stat %+v, %v; Open said %+v", st, err, info)
			}
		})
	}
}

func bindSocket(t *testing.T) func(string) error {
	return func(p string) error {
		fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		t.Cleanup(func() { syscall.Close(fd) })
		return syscall.Bind(fd, &syscall.SockaddrUnix{Name: p})
	}
}

func TestSparse(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		size, allocated int64
		want            bool
	}{
		{0, 0, false},
		{4096, 0, false},                // small files never are
		{100 * mib, 100 * mib, false},   // a dump as written
		{100 * mib, 101 * mib, false},   // with metadata blocks
		{1 << 30, (1 << 30) / 7, false}, // compressed 7 times by the file system
		{1 << 30, (1<<30)/8 - 1, true},  // less than an eighth allocated
		{SparseSlack + 4096, 0, true},   // 64 MiB of holes
		{SparseSlack - 1, 0, false},     // less than that
		{256 << 30, 4096, true},         // truncate -s 256G
		{8 * SparseSlack, SparseSlack - 1, true},
	}
	for _, tc := range tests {
		if got := Sparse(Info{Size: tc.size, Allocated: tc.allocated}); got != tc.want {
			t.Errorf("Sparse(size %d, allocated %d) = %v, want %v", tc.size, tc.allocated, got, tc.want)
		}
	}
	// A real one.
	f, err := os.Create(filepath.Join(t.TempDir(), "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(2 << 30); err != nil {
		t.Fatal(err)
	}
	info, err := Stat(f)
	if err != nil || !Sparse(info) {
		t.Errorf("a 2 GiB file of holes: %+v, %v; Sparse = false", info, err)
	}
}
