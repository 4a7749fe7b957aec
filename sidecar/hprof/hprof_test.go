package hprof_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dumpcatcher/dumpcatcher/sidecar/dumpfile"
	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof"
	"github.com/dumpcatcher/dumpcatcher/sidecar/hprof/hproftest"
)

func inspect(t testing.TB, b []byte) (hprof.Report, error) {
	t.Helper()
	return hprof.Inspect(bytes.NewReader(b), int64(len(b)))
}

// gzipMembers compresses b in blocks of block bytes, one gzip member each,
// as HotSpot does.
func gzipMembers(t testing.TB, b []byte, block int) []byte {
	t.Helper()
	var out bytes.Buffer
	for len(b) > 0 {
		n := min(block, len(b))
		z := gzip.NewWriter(&out)
		if _, err := z.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
		if err := z.Close(); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
	return out.Bytes()
}

func record(tag byte, body []byte) []byte {
	n := len(body)
	return append([]byte{tag, 0, 0, 0, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}

func header(version string, idSize byte) []byte {
	return append([]byte("JAVA PROFILE "+version+"\x00"), 0, 0, 0, idSize, 0, 0, 1, 0x8b, 0xcf, 0xe5, 0x68, 0)
}

func TestInspectSynthetic(t *testing.T) {
	complete := hproftest.Synthetic(3, 1000)
	endLen := 9
	nonSegmented := append(append(header("1.0.1", 4), record(hprof.TagUTF8, []byte("abcdefgh"))...), record(hprof.TagHeapDump, make([]byte, 500))...)
	tests := []struct {
		name      string
		data      []byte
		complete  bool
		truncated bool
		reason    string // substring of Report.Reason
		records   int
	}{
		{"complete segmented", complete, true, false, "", 6},
		{"complete 1.0.1 unsegmented", nonSegmented, true, false, "", 2},
		{"header only", header("1.0.2", 8), false, true, "cut before the heap", 0},
		{"no heap dump record", append(header("1.0.2", 8), record(hprof.TagUTF8, []byte("abcdefgh"))...), false, true, "cut before the heap", 1},
		{"empty", nil, false, true, "empty file", 0},
		{"cut in the version string", complete[:10], false, true, "inside the HPROF header", 0},
		{"cut in the timestamp", complete[:25], false, true, "inside the HPROF header", 0},
		{"cut in a record header", complete[:31+4], false, true, "inside the header of record 1", 0},
		{"cut in a record body", complete[:len(complete)-endLen-10], false, true, "inside record 5", 4},
		{"cut before HEAP DUMP END", complete[:len(complete)-endLen], false, true, "without HEAP DUMP END", 5},
		{"unknown tag", append(bytes.Clone(complete[:len(complete)-endLen]), record(0x77, nil)...), false, false, "unknown record tag 0x77", 5},
		{"trailing junk", append(bytes.Clone(complete), 1, 2, 3), false, true, "inside the header of record 7", 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := inspect(t, tt.data)
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if rep.Complete != tt.complete || rep.Truncated != tt.truncated || !strings.Contains(rep.Reason, tt.reason) {
				t.Fatalf("got %+v, want complete=%v truncated=%v reason~%q", rep, tt.complete, tt.truncated, tt.reason)
			}
			if tt.complete && (rep.Reason != "" || !rep.HeaderValid || rep.Uncompressed != int64(len(tt.data))) {
				t.Fatalf("complete dump with %+v", rep)
			}
			if tt.records != 0 && rep.Records != tt.records {
				t.Errorf("records %d, want %d", rep.Records, tt.records)
			}
		})
	}
}

func TestInspectNotHeapDump(t *testing.T) {
	random := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	random[0] = 'x'
	for name, data := range map[string][]byte{
		"random":            random,
		"text":              []byte("hello world, this is not a heap dump\n"),
		"one byte":          {'J', 'X'},
		"unknown version":   header("1.0.9", 8),
		"identifier size 5": header("1.0.2", 5),
		"no NUL":            []byte("JAVA PROFILE 1.0.2X\x00\x00\x00\x08"),
	} {
		t.Run(name, func(t *testing.T) {
			rep, err := inspect(t, data)
			if !errors.Is(err, hprof.ErrNotHeapDump) {
				t.Fatalf("want ErrNotHeapDump, got %v (%+v)", err, rep)
			}
			if rep.Complete {
				t.Fatal("garbage reported complete")
			}
			t.Log(err)
		})
	}
}

func TestInspectGzipSynthetic(t *testing.T) {
	raw := hproftest.Synthetic(20, 3000)
	gz := gzipMembers(t, raw, 4096)
	rep, err := inspect(t, gz)
	if err != nil || !rep.Complete || rep.Format != hprof.FormatGzip || rep.Uncompressed != int64(len(raw)) || rep.Members != (len(raw)+4095)/4096 {
		t.Fatalf("complete gzip: %+v %v", rep, err)
	}
	// Cut exactly after the first member: every member present is valid
	// but the HPROF content stops inside a record.
	first := gzipMembers(t, raw[:4096], 4096)
	rep, err = inspect(t, first)
	if err != nil || rep.Complete || !rep.Truncated || !strings.Contains(rep.Reason, "decompressed data ends inside record") {
		t.Fatalf("gzip cut at a member boundary: %+v %v", rep, err)
	}
	// Every cut inside the compressed data.
	for _, cut := range []int{1, 2, 10, 30, len(first) - 4, len(first) + 3, len(gz) / 2, len(gz) - 8, len(gz) - 1} {
		rep, err := inspect(t, gz[:cut])
		if err != nil || rep.Complete || !rep.Truncated {
			t.Fatalf("gzip cut at %d of %d: %+v %v", cut, len(gz), rep, err)
		}
	}
	// A bad CRC in the last trailer.
	bad := bytes.Clone(gz)
	bad[len(bad)-6] ^= 0xff
	if rep, err := inspect(t, bad); err != nil || rep.Complete || rep.Truncated || !strings.Contains(rep.Reason, "checksum") {
		t.Fatalf("bad checksum: %+v %v", rep, err)
	}
	// Junk after the last member.
	if rep, err := inspect(t, append(bytes.Clone(gz), "junk"...)); err != nil || rep.Complete {
		t.Fatalf("junk after the last member: %+v %v", rep, err)
	}
	// A gzip file that holds something else.
	if rep, err := inspect(t, gzipMembers(t, []byte("not a heap dump at all, just text"), 100)); !errors.Is(err, hprof.ErrNotHeapDump) {
		t.Fatalf("gzip of text: %+v %v", rep, err)
	}
	// A gzip of a truncated dump.
	if rep, err := inspect(t, gzipMembers(t, raw[:len(raw)-9], 1<<20)); err != nil || rep.Complete || !rep.Truncated {
		t.Fatalf("gzip of a dump without END: %+v %v", rep, err)
	}
}

type failingReaderAt struct{}

func (failingReaderAt) ReadAt([]byte, int64) (int, error) { return 0, errors.New("disk on fire") }

func TestInspectReadError(t *testing.T) {
	if _, err := hprof.Inspect(failingReaderAt{}, 1000); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("want the read error, got %v", err)
	}
	if _, err := hprof.InspectFile(filepath.Join(t.TempDir(), "missing.hprof")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := hprof.InspectFile(t.TempDir()); err == nil {
		t.Fatal("a directory inspected without error")
	}
}

// realDump returns the bytes of a heap dump written by a real JVM.
func realDump(t *testing.T, args ...string) (string, []byte) {
	jvm := hproftest.NewJVM(t)
	path := jvm.OOMDump(t, t.TempDir(), args...)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, b
}

func TestInspectRealDump(t *testing.T) {
	path, dump := realDump(t)
	start := time.Now()
	rep, err := hprof.InspectFile(path)
	took := time.Since(start)
	if err != nil || !rep.Complete || rep.Format != hprof.FormatRaw || rep.IDSize != 8 || !rep.Segmented || rep.Records < 100 {
		t.Fatalf("real dump: %+v %v", rep, err)
	}
	if d := time.Since(rep.Timestamp); d < 0 || d > time.Hour {
		t.Errorf("dump timestamp %v is not recent", rep.Timestamp)
	}
	t.Logf("%d bytes, %d records, inspected in %v", len(dump), rep.Records, took)

	// Cuts inside the header, inside records, at the last record boundary
	// (before HEAP DUMP END) and one byte short.
	cuts := []int{1, 18, 30, 31, 32, 40, 1000, len(dump) / 3, len(dump) / 2, len(dump) - 9, len(dump) - 1}
	for range 20 {
		cuts = append(cuts, 1+rand.IntN(len(dump)-1))
	}
	for _, cut := range cuts {
		rep, err := inspect(t, dump[:cut])
		if err != nil || rep.Complete || !rep.Truncated {
			t.Fatalf("cut at %d of %d: %+v %v", cut, len(dump), rep, err)
		}
	}
	// A truncated file on disk, as a JVM killed while dumping leaves it.
	cutPath := filepath.Join(t.TempDir(), "cut.hprof")
	if err := os.WriteFile(cutPath, dump[:len(dump)*2/3], 0o600); err != nil {
		t.Fatal(err)
	}
	if rep, err := hprof.InspectFile(cutPath); err != nil || rep.Complete || !rep.Truncated {
		t.Fatalf("truncated file: %+v %v", rep, err)
	} else {
		t.Logf("truncated file: %s", rep.Reason)
	}
}

func TestInspectRealGzipDump(t *testing.T) {
	path, gz := realDump(t, "-XX:HeapDumpGzipLevel=1")
	if !strings.HasSuffix(path, ".hprof.gz") {
		t.Errorf("the JVM named its gzip dump %s", path)
	}
	start := time.Now()
	rep, err := hprof.InspectFile(path)
	took := time.Since(start)
	if err != nil || !rep.Complete || rep.Format != hprof.FormatGzip || !rep.HeaderValid || rep.Members < 2 || !rep.Segmented {
		t.Fatalf("real gzip dump: %+v %v", rep, err)
	}
	t.Logf("%d bytes, %d members, %d bytes uncompressed, %d records, inspected in %v", len(gz), rep.Members, rep.Uncompressed, rep.Records, took)

	// HotSpot writes one member per block: a cut at a member boundary leaves
	// a valid gzip stream whose HPROF content is cut.
	boundaries := memberStarts(gz)
	if len(boundaries) < 2 {
		t.Fatalf("found %d gzip member starts", len(boundaries))
	}
	cuts := []int{1, 2, 10, 40, boundaries[1], boundaries[len(boundaries)-1], boundaries[1] + 100, len(gz) / 2, len(gz) - 8, len(gz) - 1}
	for range 10 {
		cuts = append(cuts, 1+rand.IntN(len(gz)-1))
	}
	for _, cut := range cuts {
		rep, err := inspect(t, gz[:cut])
		if err != nil || rep.Complete || !rep.Truncated {
			t.Fatalf("cut at %d of %d: %+v %v", cut, len(gz), rep, err)
		}
	}
}

// memberStarts returns the offsets where the gzip members of gz start.
func memberStarts(gz []byte) []int {
	var starts []int
	r := bytes.NewReader(gz)
	for r.Len() > 0 {
		starts = append(starts, len(gz)-r.Len())
		z, err := gzip.NewReader(r)
		if err != nil {
			break
		}
		z.Multistream(false)
		if _, err := io.Copy(io.Discard, z); err != nil {
			break
		}
	}
	return starts
}

func BenchmarkInspectRealDump(b *testing.B) {
	jvm := hproftest.NewJVM(b)
	heap := os.Getenv("DUMPCATCHER_BENCH_HEAP")
	if heap == "" {
		heap = "256m"
	}
	path := jvm.OOMDump(b, b.TempDir(), "-Xmx"+heap)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	b.ResetTimer()
	for b.Loop() {
		rep, err := hprof.InspectFile(path)
		if err != nil || !rep.Complete {
			b.Fatalf("%+v %v", rep, err)
		}
	}
}

func FuzzInspect(f *testing.F) {
	dump := hproftest.Synthetic(2, 50)
	f.Add(dump)
	f.Add(dump[:40])
	f.Add(dump[:len(dump)-9])
	f.Add(gzipMembers(f, dump, 64))
	f.Add(gzipMembers(f, dump, 64)[:70])
	f.Add([]byte{0x1f, 0x8b})
	f.Add([]byte("JAVA PROFILE 1.0.1\x00\x00\x00\x00\x04"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := hprof.Inspect(bytes.NewReader(data), int64(len(data)))
		if err != nil && rep.Complete {
			t.Fatalf("complete with an error: %v", err)
		}
		if rep.Complete && (rep.Truncated || rep.Reason != "" || !rep.HeaderValid) {
			t.Fatalf("inconsistent report %+v", rep)
		}
		if !rep.Complete && err == nil && rep.Reason == "" {
			t.Fatalf("incomplete without a reason: %+v", rep)
		}
	})
}

// TestInspectFileRefusesWhatIsNotARegularFile: the watcher inspects files an
// untrusted app container controls. A FIFO must not block the open (nobody
// ever writes to it), and a symbolic link must not be followed (to a file only
// the uploader may read, or to /dev/zero).
func TestInspectFileRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target.hprof")
	if err := os.WriteFile(target, hproftest.Synthetic(2, 100), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.hprof")
	if err := syscall.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.hprof")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero.hprof")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fifo, link, zero, "/dev/null"} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			type result struct {
				rep hprof.Report
				err error
			}
			done := make(chan result, 1)
			go func() {
				rep, err := hprof.InspectFile(path)
				done <- result{rep, err}
			}()
			select {
			case r := <-done:
				if r.err == nil || !errors.Is(r.err, dumpfile.ErrNotRegular) {
					t.Errorf("InspectFile(%s) = %+v, %v; want an error wrapping dumpfile.ErrNotRegular", path, r.rep, r.err)
				}
			case <-time.After(2 * time.Second):
				// Unblock the open so that the goroutine ends.
				if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
					w.Close()
				}
				<-done
				t.Fatalf("InspectFile(%s) blocked for 2 s", path)
			}
		})
	}
}
