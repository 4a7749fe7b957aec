// Package elfcore checks the structure of ELF core files (e_type ET_CORE,
// as the kernel, gdb's gcore or the `dumpcatcher core` handler write them)
// to tell a whole core from one cut short: by RLIMIT_CORE, a full disk, a
// size cap, or a writer that stopped.
//
// Inspect reads only the ELF header and the program headers (and, for a
// core with more than 65534 segments, the first section header, which holds
// their count), never the segments themselves: a core is complete when every
// PT_NOTE and PT_LOAD segment's file range lies within the file. The kernel
// writes the headers first and the segments after them in file order, so a
// core cut short has its last segments beyond the end of the file.
package elfcore

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/dumpcatcher/dumpcatcher/sidecar/dumpfile"
)

// ErrNotCore is wrapped by the errors Inspect returns for content that is
// not an ELF core file (no ELF magic, another ELF type, malformed headers).
var ErrNotCore = errors.New("not an ELF core file")

// Magic starts every ELF file.
const Magic = elf.ELFMAG

// pnXNum in e_phnum says that the number of program headers is in the
// sh_info of section header 0 (the ELF gABI's PN_XNUM).
const pnXNum = 0xffff

// maxSegments bounds the program headers walked (a hostile sh_info may say
// 4 billion); a real core has one per mapping, far fewer.
const maxSegments = 1 << 20

// Report describes the structure found in a core file.
type Report struct {
	// Size is the file's size in bytes.
	Size int64
	// Class is elf.ELFCLASS64 or elf.ELFCLASS32; zero when the ELF
	// identification could not be read completely.
	Class elf.Class
	// Machine is the architecture the core is of.
	Machine elf.Machine
	// HeaderValid says that a complete ELF header of type ET_CORE was read.
	HeaderValid bool
	// Segments counts the program headers; Loads and Notes the PT_LOAD and
	// PT_NOTE ones among them.
	Segments, Loads, Notes int
	// End is where the last PT_NOTE or PT_LOAD segment ends in the file.
	End int64
	// Complete says that the headers are whole, there is a PT_NOTE segment
	// and every PT_NOTE and PT_LOAD segment lies within the file.
	Complete bool
	// Truncated says that the file ends too early: inside the headers or
	// before the end of a segment.
	Truncated bool
	// Reason explains why the core is not complete (empty when it is).
	Reason string
}

// IsELF says that head (the first bytes of a file) starts with the ELF
// magic.
func IsELF(head []byte) bool { return bytes.HasPrefix(head, []byte(Magic)) }

// InspectFile opens path with dumpfile.Open (no link is followed, a FIFO or
// device does not block, anything but a regular file is refused with an
// error wrapping dumpfile.ErrNotRegular) and inspects it, for at most the
// size fstat reported at the open.
func InspectFile(path string) (Report, error) {
	return dumpfile.Inspect(path, Inspect)
}

// Inspect checks the core file of the given size readable through r.
//
// A core that is merely cut short is not an error: the Report says why
// (Complete false, Truncated, Reason). An empty file is reported as
// truncated. Inspect returns an error wrapping ErrNotCore when the content is
// not an ELF core, and other errors when reading fails.
func Inspect(r io.ReaderAt, size int64) (Report, error) {
	rep := Report{Size: size}
	if size <= 0 {
		return truncated(rep, "empty file"), nil
	}
	ident := make([]byte, min(elf.EI_NIDENT, size))
	if err := readFull(r, ident, 0); err != nil {
		return rep, err
	}
	if !bytes.HasPrefix([]byte(Magic), ident[:min(len(ident), len(Magic))]) {
		return rep, fmt.Errorf("%w: no ELF magic", ErrNotCore)
	}
	if len(ident) < elf.EI_NIDENT {
		return truncated(rep, "file ends inside the ELF identification"), nil
	}
	var order binary.ByteOrder
	switch elf.Data(ident[elf.EI_DATA]) {
	case elf.ELFDATA2LSB:
		order = binary.LittleEndian
	case elf.ELFDATA2MSB:
		order = binary.BigEndian
	default:
		return rep, fmt.Errorf("%w: unknown ELF data encoding %d", ErrNotCore, ident[elf.EI_DATA])
	}
	if v := elf.Version(ident[elf.EI_VERSION]); v != elf.EV_CURRENT {
		return rep, fmt.Errorf("%w: unknown ELF version %d", ErrNotCore, v)
	}
	var h header
	switch c := elf.Class(ident[elf.EI_CLASS]); c {
	case elf.ELFCLASS64:
		rep.Class = c
		var eh elf.Header64
		if ok, err := readStruct(r, order, 0, size, &eh); err != nil || !ok {
			return headerCut(rep, err)
		}
		h = header{elf.Type(eh.Type), elf.Machine(eh.Machine), eh.Phoff, uint64(eh.Phentsize), uint64(eh.Phnum), eh.Shoff, uint64(eh.Shentsize), 56, 64}
	case elf.ELFCLASS32:
		rep.Class = c
		var eh elf.Header32
		if ok, err := readStruct(r, order, 0, size, &eh); err != nil || !ok {
			return headerCut(rep, err)
		}
		h = header{elf.Type(eh.Type), elf.Machine(eh.Machine), uint64(eh.Phoff), uint64(eh.Phentsize), uint64(eh.Phnum), uint64(eh.Shoff), uint64(eh.Shentsize), 32, 40}
	default:
		return rep, fmt.Errorf("%w: unknown ELF class %d", ErrNotCore, c)
	}
	if h.typ != elf.ET_CORE {
		return rep, fmt.Errorf("%w: ELF type %v, not ET_CORE", ErrNotCore, h.typ)
	}
	rep.Machine = h.machine
	if h.phentsize != h.progSize {
		return rep, fmt.Errorf("%w: program header size %d, want %d", ErrNotCore, h.phentsize, h.progSize)
	}
	rep.HeaderValid = true
	phnum := h.phnum
	if phnum == pnXNum {
		n, ok, err := extendedCount(r, order, size, h)
		if err != nil || !ok {
			return headerCut(rep, err)
		}
		phnum = n
	}
	if phnum > maxSegments {
		return rep, fmt.Errorf("%w: %d program headers (at most %d are accepted)", ErrNotCore, phnum, maxSegments)
	}
	if h.phoff > uint64(size) || phnum*h.progSize > uint64(size)-h.phoff {
		return truncated(rep, fmt.Sprintf("file ends inside the program headers (%d at offset %d)", phnum, h.phoff)), nil
	}
	return walkSegments(r, order, size, h, int(phnum), rep)
}

// header is the part of an ELF header of either class that Inspect uses.
type header struct {
	typ                  elf.Type
	machine              elf.Machine
	phoff, phentsize     uint64
	phnum                uint64
	shoff, shentsize     uint64
	progSize, sectionLen uint64
}

// extendedCount reads the number of program headers from sh_info of
// section header 0 (used when it does not fit e_phnum).
func extendedCount(r io.ReaderAt, order binary.ByteOrder, size int64, h header) (n uint64, ok bool, err error) {
	if h.shoff == 0 || h.shentsize != h.sectionLen {
		return 0, false, fmt.Errorf("%w: e_phnum is PN_XNUM but there is no section header 0 to hold the count", ErrNotCore)
	}
	if h.shoff > uint64(size) {
		return 0, false, nil
	}
	if h.progSize == 56 {
		var sh elf.Section64
		if ok, err := readStruct(r, order, int64(h.shoff), size, &sh); err != nil || !ok {
			return 0, ok, err
		}
		return uint64(sh.Info), true, nil
	}
	var sh elf.Section32
	if ok, err := readStruct(r, order, int64(h.shoff), size, &sh); err != nil || !ok {
		return 0, ok, err
	}
	return uint64(sh.Info), true, nil
}

// walkSegments reads the program headers in chunks and checks that every
// PT_NOTE and PT_LOAD segment lies within the file.
func walkSegments(r io.ReaderAt, order binary.ByteOrder, size int64, h header, phnum int, rep Report) (Report, error) {
	const chunk = 1024
	buf := make([]byte, min(phnum, chunk)*int(h.progSize))
	var cut string
	for i := 0; i < phnum; i += chunk {
		n := min(phnum-i, chunk)
		b := buf[:n*int(h.progSize)]
		if err := readFull(r, b, int64(h.phoff)+int64(i)*int64(h.progSize)); err != nil {
			return rep, err
		}
		for j := range n {
			p := b[j*int(h.progSize):]
			var typ elf.ProgType
			var off, filesz uint64
			if h.progSize == 56 {
				typ, off, filesz = elf.ProgType(order.Uint32(p)), order.Uint64(p[8:]), order.Uint64(p[32:])
			} else {
				typ, off, filesz = elf.ProgType(order.Uint32(p)), uint64(order.Uint32(p[4:])), uint64(order.Uint32(p[16:]))
			}
			rep.Segments++
			switch typ {
			case elf.PT_LOAD:
				rep.Loads++
			case elf.PT_NOTE:
				rep.Notes++
			default:
				continue
			}
			end := off + filesz
			if end < off || end > 1<<62 {
				return rep, fmt.Errorf("%w: segment %d (%v) at offset %d with %d bytes overflows", ErrNotCore, i+j, typ, off, filesz)
			}
			rep.End = max(rep.End, int64(end))
			if end > uint64(size) && cut == "" {
				cut = fmt.Sprintf("segment %d (%v at offset %d, %d bytes) ends at %d, beyond the file's %d bytes", i+j, typ, off, filesz, end, size)
			}
		}
	}
	switch {
	case cut != "":
		return truncated(rep, cut), nil
	case rep.Notes == 0:
		rep.Reason = "no PT_NOTE segment (a core's registers and process information are missing)"
		return rep, nil
	}
	rep.Complete = true
	return rep, nil
}

func truncated(rep Report, reason string) Report {
	rep.Truncated = true
	rep.Reason = reason
	return rep
}

// headerCut reports a file that ends inside its headers, or the error.
func headerCut(rep Report, err error) (Report, error) {
	if err != nil {
		return rep, err
	}
	return truncated(rep, "file ends inside the ELF header"), nil
}

// readStruct decodes v at off when the file holds all of it; ok is false
// when the file ends before.
func readStruct(r io.ReaderAt, order binary.ByteOrder, off, size int64, v any) (ok bool, err error) {
	n := int64(binary.Size(v))
	if off > size || n > size-off {
		return false, nil
	}
	b := make([]byte, n)
	if err := readFull(r, b, off); err != nil {
		return false, err
	}
	if _, err := binary.Decode(b, order, v); err != nil {
		return false, fmt.Errorf("decoding the ELF header: %w", err)
	}
	return true, nil
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
