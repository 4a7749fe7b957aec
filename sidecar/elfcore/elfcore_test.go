package elfcore

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/realpart"
	"github.com/dumpcatcher/dumpcatcher/sidecar/dumpfile"
)

const spinProgram = `#include <unistd.h>
int main(void) { for (;;) pause(); }
`

// realCore makes a core file of a running static C program with gdb's
// gcore and returns it with the program. The host's kernel.core_pattern is
// not touched.
func realCore(t *testing.T) (core, program []byte) {
	t.Helper()
	gcc := realpart.ToolOrPath(t, "gcc")
	gcore := realpart.ToolOrPath(t, "gcore")
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "spin.c"), filepath.Join(dir, "spin")
	if err := os.WriteFile(src, []byte(spinProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(gcc, "-static", "-O0", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc -static: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	time.Sleep(100 * time.Millisecond)
	prefix := filepath.Join(dir, "core")
	if out, err := exec.Command(gcore, "-o", prefix, fmt.Sprint(cmd.Process.Pid)).CombinedOutput(); err != nil {
		t.Fatalf("gcore: %v\n%s", err, out)
	}
	core, err := os.ReadFile(fmt.Sprintf("%s.%d", prefix, cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	program, err = os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return core, program
}

func TestInspectRealCore(t *testing.T) {
	core, program := realCore(t)
	f, err := elf.NewFile(bytes.NewReader(core))
	if err != nil {
		t.Fatal(err)
	}
	var notes, loads int
	var end int64
	var lastLoad, firstNote *elf.Prog
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_NOTE:
			notes++
			if firstNote == nil {
				firstNote = p
			}
		case elf.PT_LOAD:
			loads++
			if lastLoad == nil || p.Off > lastLoad.Off {
				lastLoad = p
			}
		default:
			continue
		}
		end = max(end, int64(p.Off+p.Filesz))
	}
	if notes == 0 || loads == 0 || f.Type != elf.ET_CORE {
		t.Fatalf("gcore made a %v with %d notes and %d loads", f.Type, notes, loads)
	}
	whole := Report{Size: int64(len(core)), Class: elf.ELFCLASS64, Machine: f.Machine, HeaderValid: true,
		Segments: len(f.Progs), Loads: loads, Notes: notes, End: end, Complete: true}
	cut := func(n int64, reason string) Report {
		r := whole
		r.Size, r.Complete, r.Truncated, r.Reason = n, false, true, reason
		return r
	}
	beyond := func(n int64) Report {
		r := cut(n, "")
		for i, p := range f.Progs {
			if (p.Type == elf.PT_LOAD || p.Type == elf.PT_NOTE) && int64(p.Off+p.Filesz) > n {
				r.Reason = fmt.Sprintf("segment %d (%v at offset %d, %d bytes) ends at %d, beyond the file's %d bytes", i, p.Type, p.Off, p.Filesz, p.Off+p.Filesz, n)
				break
			}
		}
		return r
	}
	header := func(n int64, reason string) Report {
		r := Report{Size: n, Class: elf.ELFCLASS64, Truncated: true, Reason: reason}
		if n >= 64 {
			r.Machine, r.HeaderValid = f.Machine, true
		}
		return r
	}
	phEnd := int64(64 + 56*len(f.Progs))
	tests := []struct {
		name string
		size int64
		want Report
	}{
		{"whole", int64(len(core)), whole},
		{"only the segments: section headers cut", end, func() Report { r := whole; r.Size = end; return r }()},
		{"last load cut by one byte", int64(lastLoad.Off + lastLoad.Filesz - 1), beyond(int64(lastLoad.Off + lastLoad.Filesz - 1))},
		{"cut inside the first load", int64(f.Progs[1].Off) + 10, beyond(int64(f.Progs[1].Off) + 10)},
		{"cut inside the note", int64(firstNote.Off) + 1, beyond(int64(firstNote.Off) + 1)},
		{"only the headers", phEnd, beyond(phEnd)},
		{"cut inside the program headers", phEnd - 1, header(phEnd-1, fmt.Sprintf("file ends inside the program headers (%d at offset 64)", len(f.Progs)))},
		{"cut inside the ELF header", 63, header(63, "file ends inside the ELF header")},
		{"cut inside the identification", 10, Report{Size: 10, Truncated: true, Reason: "file ends inside the ELF identification"}},
		{"magic only", 4, Report{Size: 4, Truncated: true, Reason: "file ends inside the ELF identification"}},
		{"empty", 0, Report{Truncated: true, Reason: "empty file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Inspect(bytes.NewReader(core[:tt.size]), tt.size)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Inspect =\n%+v, want\n%+v", got, tt.want)
			}
		})
	}
	t.Run("the program is no core", func(t *testing.T) {
		if _, err := Inspect(bytes.NewReader(program), int64(len(program))); !errors.Is(err, ErrNotCore) || !strings.Contains(err.Error(), "ET_EXEC") {
			t.Errorf("Inspect(executable) = %v, want ErrNotCore naming ET_EXEC", err)
		}
	})
	t.Run("file on disk, cut short as by RLIMIT_CORE", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "core-20261123T100000.000Z-spin-42.core")
		if err := os.WriteFile(path, core, 0o600); err != nil {
			t.Fatal(err)
		}
		if rep, err := InspectFile(path); err != nil || rep != whole {
			t.Errorf("InspectFile = %+v, %v, want %+v", rep, err, whole)
		}
		if err := os.Truncate(path, int64(lastLoad.Off)+4096); err != nil {
			t.Fatal(err)
		}
		if rep, err := InspectFile(path); err != nil || rep.Complete || !rep.Truncated {
			t.Errorf("InspectFile(truncated) = %+v, %v", rep, err)
		}
		link := filepath.Join(dir, "core-20261123T100000.000Z-spin-43.core")
		if err := os.Symlink(path, link); err != nil {
			t.Fatal(err)
		}
		if _, err := InspectFile(link); !errors.Is(err, dumpfile.ErrNotRegular) {
			t.Errorf("InspectFile(symlink) = %v, want ErrNotRegular", err)
		}
	})
}

// core64 builds a little-endian ELF64 core header with the given program
// headers (type, offset, filesz) and returns it.
func core64(mutate func(*elf.Header64), progs ...[3]uint64) []byte {
	h := elf.Header64{Type: uint16(elf.ET_CORE), Machine: uint16(elf.EM_X86_64), Version: 1,
		Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: uint16(len(progs))}
	copy(h.Ident[:], Magic)
	h.Ident[elf.EI_CLASS], h.Ident[elf.EI_DATA], h.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	if mutate != nil {
		mutate(&h)
	}
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, h)
	for _, p := range progs {
		_ = binary.Write(&b, binary.LittleEndian, elf.Prog64{Type: uint32(p[0]), Off: p[1], Filesz: p[2]})
	}
	return b.Bytes()
}

func TestInspectHostile(t *testing.T) {
	note := uint64(elf.PT_NOTE)
	load := uint64(elf.PT_LOAD)
	tests := []struct {
		name    string
		data    []byte
		size    int64 // 0: len(data)
		wantErr string
		want    Report
	}{
		{name: "not ELF", data: []byte("JAVA PROFILE 1.0.2\x00"), wantErr: "no ELF magic"},
		{name: "executable", data: core64(func(h *elf.Header64) { h.Type = uint16(elf.ET_EXEC) }), wantErr: "ET_EXEC"},
		{name: "wrong program header size", data: core64(func(h *elf.Header64) { h.Phentsize = 1 }, [3]uint64{note, 120, 0}), wantErr: "program header size"},
		{name: "unknown class", data: core64(func(h *elf.Header64) { h.Ident[elf.EI_CLASS] = 9 }), wantErr: "unknown ELF class"},
		{name: "offset overflow", data: core64(nil, [3]uint64{note, 1 << 63, 1 << 63}), wantErr: "overflows"},
		{name: "PN_XNUM without section header", data: core64(func(h *elf.Header64) { h.Phnum = pnXNum }), wantErr: "PN_XNUM"},
		{name: "PN_XNUM with 4 billion segments", data: append(core64(func(h *elf.Header64) { h.Phnum = pnXNum; h.Shoff = 64; h.Shentsize = 64 }),
			func() []byte {
				var b bytes.Buffer
				_ = binary.Write(&b, binary.LittleEndian, elf.Section64{Info: 0xffffffff})
				return b.Bytes()
			}()...), wantErr: "at most"},
		{name: "no note: not complete", data: core64(nil, [3]uint64{load, 120, 0}),
			want: Report{Size: 120, Class: elf.ELFCLASS64, Machine: elf.EM_X86_64, HeaderValid: true, Segments: 1, Loads: 1, End: 120,
				Reason: "no PT_NOTE segment (a core's registers and process information are missing)"}},
		{name: "a terabyte claimed, headers only", data: core64(nil, [3]uint64{note, 120, 1 << 40}), size: 120,
			want: Report{Size: 120, Class: elf.ELFCLASS64, Machine: elf.EM_X86_64, HeaderValid: true, Segments: 1, Notes: 1, End: 120 + 1<<40, Truncated: true,
				Reason: fmt.Sprintf("segment 0 (PT_NOTE at offset 120, %d bytes) ends at %d, beyond the file's 120 bytes", 1<<40, 120+1<<40)}},
		{name: "65534 program headers claimed in a small file", data: core64(func(h *elf.Header64) { h.Phnum = 65534 }),
			want: Report{Size: 64, Class: elf.ELFCLASS64, Machine: elf.EM_X86_64, HeaderValid: true, Truncated: true,
				Reason: "file ends inside the program headers (65534 at offset 64)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size := tt.size
			if size == 0 {
				size = int64(len(tt.data))
			}
			got, err := Inspect(bytes.NewReader(tt.data), size)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrNotCore) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Inspect = %+v, %v; want ErrNotCore with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Inspect =\n%+v, %v; want\n%+v", got, err, tt.want)
			}
		})
	}
}

// sparse serves a header of one PT_NOTE segment of a terabyte and zeros
// after it, and counts the bytes read.
type sparse struct {
	head []byte
	read int64
}

func (s *sparse) ReadAt(p []byte, off int64) (int, error) {
	for i := range p {
		p[i] = 0
		if o := off + int64(i); o < int64(len(s.head)) {
			p[i] = s.head[o]
		}
	}
	s.read += int64(len(p))
	return len(p), nil
}

// TestInspectBoundedReads: a whole core of a terabyte (a sparse file) is
// checked from its headers alone.
func TestInspectBoundedReads(t *testing.T) {
	s := &sparse{head: core64(nil, [3]uint64{uint64(elf.PT_NOTE), 120, 1 << 40})}
	rep, err := Inspect(s, 120+1<<40)
	if err != nil || !rep.Complete {
		t.Fatalf("Inspect = %+v, %v", rep, err)
	}
	if s.read > elf.EI_NIDENT+120 {
		t.Errorf("read %d bytes, want only the identification and the 120 bytes of headers", s.read)
	}
}

const segvProgram = `#include <stdlib.h>
#include <string.h>
int main(void) { char *p = malloc(1 << 20); memset(p, 1, 1 << 20); *(volatile int *)0 = 0; return 0; }
`

// TestInspectKernelCore lets the kernel itself write cores of a static C
// program that segfaults: one whole, one cut short by RLIMIT_CORE (set with
// prlimit for that process only). It runs only when kernel.core_pattern is
// a plain file name in the working directory ("core" or "core.%p"-like),
// because this test must not change the host's pattern; the gcore test
// above covers the structure check everywhere.
func TestInspectKernelCore(t *testing.T) {
	pattern, err := os.ReadFile("/proc/sys/kernel/core_pattern")
	if err != nil {
		t.Skipf("no core_pattern: %v", err)
	}
	p := strings.TrimSpace(string(pattern))
	if p == "" || strings.ContainsAny(p, "|/") {
		t.Skipf("kernel.core_pattern is %q, not a file in the working directory; not changed by this test", p)
	}
	gcc, prlimit := realpart.ToolOrPath(t, "gcc"), realpart.ToolOrPath(t, "prlimit")
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "segv.c"), filepath.Join(dir, "segv")
	if err := os.WriteFile(src, []byte(segvProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(gcc, "-static", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc -static: %v\n%s", err, out)
	}
	crash := func(limit string) (Report, int64) {
		t.Helper()
		cwd := t.TempDir()
		cmd := exec.Command(prlimit, "--core="+limit+":"+limit, bin)
		cmd.Dir = cwd
		if err := cmd.Run(); err == nil {
			t.Fatal("the program did not crash")
		}
		entries, _ := os.ReadDir(cwd)
		if len(entries) != 1 {
			t.Skipf("the kernel wrote %v for pattern %q (a core handler may be installed); nothing to check", entries, p)
		}
		path := filepath.Join(cwd, entries[0].Name())
		fi, _ := os.Stat(path)
		rep, err := InspectFile(path)
		if err != nil {
			t.Fatalf("InspectFile(%s): %v", path, err)
		}
		return rep, fi.Size()
	}
	whole, size := crash("unlimited")
	if !whole.Complete || whole.Notes == 0 || whole.Loads == 0 || whole.End > size {
		t.Errorf("whole kernel core of %d bytes: %+v", size, whole)
	}
	t.Logf("whole kernel core, %d bytes: %+v", size, whole)
	cut, cutSize := crash("200000")
	t.Logf("cut by RLIMIT_CORE, %d bytes: %+v", cutSize, cut)
	if cut.Complete || !cut.Truncated || !strings.Contains(cut.Reason, "beyond the file's") {
		t.Errorf("kernel core cut by RLIMIT_CORE at %d bytes: %+v", cutSize, cut)
	}
}
