package jvm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
)

// DumpOptions tune HeapDumpWith.
type DumpOptions struct {
	// Live dumps only reachable objects (the JVM runs a full GC first), as
	// jcmd GC.heap_dump does by default; false dumps everything (-all).
	Live bool
	// GzipLevel, 1 to 9, makes the JVM write a gzip-compressed dump
	// (JDK 15 and later; older JVMs ignore it and write a raw dump). 0
	// writes a raw dump.
	GzipLevel int
}

// partSuffix ends the name of the private directory a dump is written in.
const partSuffix = ".part"

// HeapDump is HeapDumpWith without compression.
func HeapDump(ctx context.Context, p Process, dir, name string, live bool) (string, error) {
	return HeapDumpWith(ctx, p, dir, name, DumpOptions{Live: live})
}

// HeapDumpWith makes the JVM write a heap dump and returns its path,
// dir/name, once the JVM reported success. The JVM writes the file itself, so
// dir is a path in the JVM's mount namespace: the shared volume as mounted in
// the app container (this process reaches it by the same path when it runs in
// that container, else through /proc/<pid>/root).
//
// The JVM writes into dir/.<name>.part/<name>, a private directory this
// function creates with the JVM's uid; when the JVM reports success the file
// is renamed to dir/name (never replacing a file) and the directory removed.
// The uploader ignores names starting with "." (contract.TempPrefix), so it
// only ever sees complete dumps appear, by rename.
//
// When the JVM reports an error, or ctx ends first (the error then wraps
// ErrNotResponding), the file and the directory are removed. The JVM may
// still be working on the request then:
//   - if it is writing the dump, it goes on writing into the removed file
//     until it is done; the disk space is freed when it closes the file (the
//     volume counts it until then), and no name ever points to it;
//   - if it has not started (a stopped JVM, or one stuck before a
//     safepoint), it reads the request later and fails to create the file
//     because the directory is gone: no file appears. HotSpot creates the
//     dump file exclusively and only once, so it never writes the dump under
//     another name. (Had the JVM been told to write dir/.<name> directly, a
//     late start would leave a complete hidden dump that nobody removes.)
func HeapDumpWith(ctx context.Context, p Process, dir, name string, o DumpOptions) (string, error) {
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("heap dump: the directory %q must be an absolute path (the JVM resolves relative ones against its own working directory)", dir)
	}
	if name == "" || name != filepath.Base(name) || strings.HasPrefix(name, contract.TempPrefix) || name == ".." {
		return "", fmt.Errorf("heap dump: bad file name %q: a plain name not starting with %q", name, contract.TempPrefix)
	}
	if o.GzipLevel < 0 || o.GzipLevel > 9 {
		return "", fmt.Errorf("heap dump: gzip level %d is not 0 to 9", o.GzipLevel)
	}
	dir = filepath.Clean(dir)
	final := filepath.Join(dir, name)
	work := filepath.Join(dir, contract.TempPrefix+name+partSuffix)
	part := filepath.Join(work, name)
	if len(part) > maxArgLen {
		return "", fmt.Errorf("heap dump: the path %s is longer than the %d bytes the attach protocol carries", part, maxArgLen)
	}

	id := identityFor(p)
	if err := checkIdentity(p, id); err != nil {
		return "", err
	}
	var lFinal, lWork, lPart string
	err := id.run(func() error {
		lFinal, lWork, lPart = localPath(p, final), localPath(p, work), localPath(p, part)
		if _, err := os.Lstat(lFinal); err == nil {
			return fmt.Errorf("heap dump: %s exists already", final)
		}
		if err := os.Mkdir(lWork, 0o700); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("heap dump: %s exists already (another dump of that name is being written, or an earlier one was interrupted)", work)
			}
			return fmt.Errorf("heap dump: %w (the directory must be writable by uid %d, the JVM's)", err, p.UID)
		}
		if os.Geteuid() != p.UID {
			// We are root and could not take the JVM's uid: let the
			// JVM write into the directory anyway.
			if err := os.Chmod(lWork, 0o777); err != nil {
				return fmt.Errorf("heap dump: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	cleanup := func() {
		_ = id.run(func() error { removePart(lPart, lWork); return nil })
	}

	c, err := Attach(ctx, p)
	if err != nil {
		cleanup()
		return "", err
	}
	live := "-all"
	if o.Live {
		live = "-live"
	}
	gz := ""
	if o.GzipLevel > 0 {
		gz = strconv.Itoa(o.GzipLevel)
	}
	status, out, err := c.Execute(ctx, "dumpheap", part, live, gz)
	if err != nil {
		cleanup()
		return "", fmt.Errorf("heap dump: %w", err)
	}
	// HotSpot answers 0 even when the dump failed; only this line says it
	// worked.
	if status != 0 || !strings.Contains(out, "Heap dump file created") {
		cleanup()
		return "", fmt.Errorf("heap dump of %v into %s failed (status %d): %s", p, part, status, strings.TrimSpace(out))
	}
	err = id.run(func() error {
		if err := renameNoReplace(lPart, lFinal); err != nil {
			removePart(lPart, lWork)
			return fmt.Errorf("heap dump: move the finished dump into place: %w", err)
		}
		_ = os.Remove(lWork)
		return nil
	})
	if err != nil {
		return "", err
	}
	return final, nil
}

// removePart removes the dump being written and its directory. Should the JVM
// create the file between the two removals, the loop removes it again.
func removePart(part, work string) {
	for range 10 {
		_ = os.Remove(part)
		err := os.Remove(work)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// renameNoReplace renames old to new unless new exists.
func renameNoReplace(old, new string) error {
	err := unix.Renameat2(unix.AT_FDCWD, old, unix.AT_FDCWD, new, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// A file system without RENAME_NOREPLACE.
		if _, err := os.Lstat(new); err == nil {
			return &os.LinkError{Op: "rename", Old: old, New: new, Err: fs.ErrExist}
		}
		return os.Rename(old, new)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: old, New: new, Err: err}
	}
	return nil
}
