package jvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrNoPerfData says that the JVM publishes no hsperfdata file: it runs with
// -XX:-UsePerfData or -XX:+PerfDisableSharedMem, or its /tmp is not
// reachable from here.
var ErrNoPerfData = errors.New("no hsperfdata for the JVM")

// Units of a performance counter (HotSpot's PerfData::Units).
type Units byte

// The units HotSpot uses.
const (
	UnitsNone   Units = 1
	UnitsBytes  Units = 2
	UnitsTicks  Units = 3 // high-resolution clock ticks: see sun.os.hrt.frequency
	UnitsEvents Units = 4
	UnitsString Units = 5
	UnitsHertz  Units = 6
)

// Variability of a performance counter (HotSpot's PerfData::Variability).
type Variability byte

// The variabilities HotSpot uses.
const (
	Constant  Variability = 1
	Monotonic Variability = 2
	Variable  Variability = 3
)

// Counter is one entry of the hsperfdata file.
type Counter struct {
	// Name is e.g. "sun.gc.generation.1.space.0.used".
	Name string
	// Type is the entry's data type: 'J' (a 64-bit integer) or 'B' (a byte
	// vector, which carries strings).
	Type byte
	// Units and Variability classify the value.
	Units       Units
	Variability Variability
	// Int is the value of a 'J' counter.
	Int int64
	// Bytes is the value of a vector counter; String returns it as text.
	Bytes []byte
}

// String returns a vector counter's bytes up to the first NUL, or the
// integer in decimal.
func (c Counter) String() string {
	if c.Type == 'J' {
		return strconv.FormatInt(c.Int, 10)
	}
	if i := bytes.IndexByte(c.Bytes, 0); i >= 0 {
		return string(c.Bytes[:i])
	}
	return string(c.Bytes)
}

// PerfData is a snapshot of a JVM's hsperfdata (the jvmstat counters that jps,
// jstat and jcmd PerfCounter.print read).
type PerfData struct {
	// Major and Minor are the format version (2.0 since JDK 1.4.2).
	Major, Minor int
	// Counters maps counter names to counters.
	Counters map[string]Counter
}

// Int returns an integer counter.
func (d *PerfData) Int(name string) (int64, bool) {
	c, ok := d.Counters[name]
	if !ok || c.Type != 'J' {
		return 0, false
	}
	return c.Int, true
}

// String returns a string counter.
func (d *PerfData) String(name string) (string, bool) {
	c, ok := d.Counters[name]
	if !ok || c.Type == 'J' {
		return "", false
	}
	return c.String(), true
}

// Names returns the counter names, sorted.
func (d *PerfData) Names() []string {
	names := make([]string, 0, len(d.Counters))
	for n := range d.Counters {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Layout of the hsperfdata file (HotSpot's perfMemory.hpp): a prologue, then
// entries, each a header followed by its name and data.
const (
	perfMagic       = 0xcafec0c0 // the first four bytes, in big-endian order
	prologueLen     = 32
	entryHeaderLen  = 20
	maxPerfDataSize = 64 << 20
)

// ParsePerfData decodes the content of an hsperfdata file.
func ParsePerfData(b []byte) (*PerfData, error) {
	if len(b) < prologueLen {
		return nil, fmt.Errorf("hsperfdata: %d bytes, shorter than its prologue", len(b))
	}
	if m := binary.BigEndian.Uint32(b); m != perfMagic {
		return nil, fmt.Errorf("hsperfdata: bad magic %#x", m)
	}
	var order binary.ByteOrder
	switch b[4] {
	case 0:
		order = binary.BigEndian
	case 1:
		order = binary.LittleEndian
	default:
		return nil, fmt.Errorf("hsperfdata: bad byte order %d", b[4])
	}
	d := &PerfData{Major: int(b[5]), Minor: int(b[6]), Counters: map[string]Counter{}}
	if d.Major != 2 {
		return nil, fmt.Errorf("hsperfdata: unsupported version %d.%d", d.Major, d.Minor)
	}
	if b[7] == 0 {
		return nil, errors.New("hsperfdata: not accessible yet (the JVM is still initializing it)")
	}
	used := int(int32(order.Uint32(b[8:])))
	off := int(int32(order.Uint32(b[24:])))
	n := int(int32(order.Uint32(b[28:])))
	if used <= 0 || used > len(b) {
		used = len(b)
	}
	b = b[:used]
	for i := 0; i < n; i++ {
		if off < prologueLen || off+entryHeaderLen > len(b) {
			return nil, fmt.Errorf("hsperfdata: entry %d at offset %d is outside the %d used bytes", i, off, len(b))
		}
		e := b[off:]
		length := int(int32(order.Uint32(e[0:])))
		nameOff := int(int32(order.Uint32(e[4:])))
		vecLen := int(int32(order.Uint32(e[8:])))
		dataOff := int(int32(order.Uint32(e[16:])))
		if length < entryHeaderLen || length > len(e) || nameOff < entryHeaderLen || nameOff >= length ||
			dataOff < nameOff || dataOff > length || vecLen < 0 {
			return nil, fmt.Errorf("hsperfdata: entry %d at offset %d is malformed", i, off)
		}
		name := e[nameOff:dataOff]
		if j := bytes.IndexByte(name, 0); j >= 0 {
			name = name[:j]
		}
		c := Counter{Name: string(name), Type: e[12], Units: Units(e[14]), Variability: Variability(e[15])}
		data := e[dataOff:length]
		switch {
		case vecLen == 0 && c.Type == 'J':
			if len(data) < 8 {
				return nil, fmt.Errorf("hsperfdata: counter %s is cut", c.Name)
			}
			c.Int = int64(order.Uint64(data))
		case vecLen > 0:
			if vecLen > len(data) {
				vecLen = len(data) // the element size of 'B' is 1; others are not used
			}
			c.Bytes = append([]byte(nil), data[:vecLen]...)
		}
		d.Counters[c.Name] = c
		off += length
	}
	return d, nil
}

// ReadPerfData reads the JVM's hsperfdata file, /tmp/hsperfdata_<user>/<nspid>
// in the JVM's mount namespace, without attaching to the JVM. It reaches the
// file through /proc/<pid>/root when it can, else through our own /tmp, and
// picks the hsperfdata_* directory whose file belongs to the JVM's uid (so the
// user name, which comes from the JVM's /etc/passwd, is not needed). The file
// is private to the JVM's uid: as root the read happens with the JVM's ids
// (see the package documentation). Without a file the error wraps
// ErrNoPerfData and says whether -XX:-UsePerfData or -XX:+PerfDisableSharedMem
// is the reason.
func ReadPerfData(p Process) (*PerfData, error) {
	var d *PerfData
	err := identityFor(p).run(func() error {
		var err error
		d, err = readPerfData(p)
		return err
	})
	return d, err
}

func readPerfData(p Process) (*PerfData, error) {
	tmp := jvmTmp(p)
	dirs, _ := filepath.Glob(filepath.Join(tmp, "hsperfdata_*"))
	var errs []error
	for _, dir := range dirs {
		b, err := readPerfFile(p, dir)
		if errors.Is(err, errNotTheJVMs) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		d, err := ParsePerfData(b)
		if err != nil {
			return nil, fmt.Errorf("%s/%d: %w", dir, p.NSPID, err)
		}
		return d, nil
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("read hsperfdata of %v: %w", p, errors.Join(errs...))
	}
	why := "its /tmp may not be reachable from here"
	if off, where := lastFlag(p, func(o string) (bool, bool) {
		switch o {
		case "-XX:-UsePerfData", "-XX:+PerfDisableSharedMem":
			return true, true
		case "-XX:+UsePerfData", "-XX:-PerfDisableSharedMem":
			return false, true
		}
		return false, false
	}); off {
		why = "-XX:-UsePerfData or -XX:+PerfDisableSharedMem in " + where
	} else if !alive(p) {
		return nil, fmt.Errorf("read hsperfdata of %v: %w", p, ErrProcessGone)
	}
	return nil, fmt.Errorf("%w: no %s/hsperfdata_*/%d owned by uid %d (%s)", ErrNoPerfData, tmp, p.NSPID, p.UID, why)
}

// errNotTheJVMs says that an hsperfdata directory or file is not the JVM's
// (another user's, or missing).
var errNotTheJVMs = errors.New("not the JVM's hsperfdata")

// readPerfFile reads dir/<nspid>, the JVM's hsperfdata file if dir is its
// hsperfdata directory. Like HotSpot, it accepts only a directory that is
// not a symbolic link and belongs to the JVM's uid, and in it only a regular
// file of the JVM's uid (opened relative to the opened directory, so neither
// can be swapped meanwhile), of at most maxPerfDataSize bytes (HotSpot's is
// PerfDataMemorySize, 64 KiB by default, which it maps into memory; so does
// jstat: this reads it instead). The app may put anything there: a FIFO, a
// link, a huge file; none blocks or is followed.
func readPerfFile(p Process, dir string) ([]byte, error) {
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errNotTheJVMs // a link, not a directory, or not ours to read
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil || int(st.Uid) != p.UID {
		return nil, errNotTheJVMs
	}
	name := strconv.Itoa(p.NSPID)
	var lst unix.Stat_t
	if err := unix.Fstatat(dfd, name, &lst, unix.AT_SYMLINK_NOFOLLOW); err != nil || int(lst.Uid) != p.UID {
		return nil, errNotTheJVMs
	}
	f, fst, err := openRegularAt(dfd, name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	defer f.Close()
	if int(fst.Uid) != p.UID {
		return nil, errNotTheJVMs
	}
	b, err := readRegular(f, fst, maxPerfDataSize, false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return b, nil
}
