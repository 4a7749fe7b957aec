package hserr

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/realpart"
	"github.com/dumpcatcher/dumpcatcher/sidecar/dumpfile"
)

const crashProgram = `public class Crash {
    public static void main(String[] args) throws Exception {
        java.lang.reflect.Field f = Class.forName("sun.misc.Unsafe").getDeclaredField("theUnsafe");
        f.setAccessible(true);
        ((sun.misc.Unsafe) f.get(null)).putAddress(0, 0);
    }
}
`

// realLog crashes a real JVM and returns its hs_err log.
func realLog(t *testing.T) []byte {
	t.Helper()
	java, javac := realpart.Java(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Crash.java"), []byte(crashProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(javac, "-d", dir, filepath.Join(dir, "Crash.java")).CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	cmd := exec.Command(java, "-XX:-CreateCoredumpOnCrash", "-XX:ErrorFile="+dir+"/hs_err_pid%p.log", "-cp", dir, "Crash")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("the JVM did not crash:\n%s", out)
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "hs_err_pid*.log"))
	if len(logs) != 1 {
		t.Fatalf("crash logs: %v", logs)
	}
	b, err := os.ReadFile(logs[0])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInspectRealLog(t *testing.T) {
	log := realLog(t)
	end := bytes.LastIndex(log, []byte("\nEND."))
	tests := []struct {
		name string
		data []byte
		want Report
	}{
		{"whole", log, Report{Size: int64(len(log)), HeaderValid: true, Complete: true}},
		{"without the last newline", log[:len(log)-1], Report{Size: int64(len(log) - 1), HeaderValid: true, Complete: true}},
		{"with trailing white space", append(bytes.Clone(log), " \r\n\n"...), Report{Size: int64(len(log) + 4), HeaderValid: true, Complete: true}},
		{"cut inside END.", log[:end+3], cutReport(end + 3)},
		{"cut before END.", log[:end+1], cutReport(end + 1)},
		{"cut in the middle", log[:len(log)/2], cutReport(len(log) / 2)},
		{"cut after the header", log[:len(Header)], cutReport(len(Header))},
		{"cut inside the header", log[:len(Header)-1], Report{Size: int64(len(Header) - 1), Truncated: true, Reason: "file ends inside the crash log's first line"}},
		{"one byte", log[:1], Report{Size: 1, Truncated: true, Reason: "file ends inside the crash log's first line"}},
		{"empty", nil, Report{Truncated: true, Reason: "empty file"}},
		{"END. without a line of its own", append([]byte(Header), "END."...), cutReport(len(Header) + 4)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Inspect(bytes.NewReader(tt.data), int64(len(tt.data)))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Inspect = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func cutReport(size int) Report {
	return Report{Size: int64(size), HeaderValid: true, Truncated: true,
		Reason: `the log does not end with HotSpot's last line "END." (still being written, or its writer stopped)`}
}

func TestInspectNotALog(t *testing.T) {
	for _, data := range []string{"JAVA PROFILE 1.0.2\x00", "\x7fELF", "# a comment\nEND.\n", "hello"} {
		_, err := Inspect(strings.NewReader(data), int64(len(data)))
		if !errors.Is(err, ErrNotCrashLog) {
			t.Errorf("Inspect(%q) = %v, want ErrNotCrashLog", data, err)
		}
	}
}

// countingReaderAt serves a file of any size whose every byte is 'x' after
// a valid header, and counts what was read.
type countingReaderAt struct{ read int64 }

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	for i := range p {
		if off+int64(i) < int64(len(Header)) {
			p[i] = Header[off+int64(i)]
		} else {
			p[i] = 'x'
		}
	}
	c.read += int64(len(p))
	return len(p), nil
}

// TestInspectBoundedReads: a terabyte-sized (sparse) log costs two small
// reads, not a read of the file.
func TestInspectBoundedReads(t *testing.T) {
	r := &countingReaderAt{}
	rep, err := Inspect(r, 1<<40)
	if err != nil || rep.Complete || !rep.Truncated {
		t.Fatalf("Inspect = %+v, %v", rep, err)
	}
	if r.read > int64(len(Header)+tailLen) {
		t.Errorf("read %d bytes, want at most %d", r.read, len(Header)+tailLen)
	}
}

func TestInspectShrunk(t *testing.T) {
	data := []byte(Header + "\nEND.\n")
	_, err := Inspect(bytes.NewReader(data), int64(len(data))+10)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Inspect of a file that shrank = %v, want ErrUnexpectedEOF", err)
	}
}

func TestInspectFileRefusesLinks(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "secret")
	if err := os.WriteFile(target, []byte(Header+"\nEND.\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "hs_err_pid1.log")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := InspectFile(link); !errors.Is(err, dumpfile.ErrNotRegular) {
		t.Errorf("InspectFile(symlink) = %v, want ErrNotRegular", err)
	}
	if rep, err := InspectFile(target); err != nil || !rep.Complete {
		t.Errorf("InspectFile(regular) = %+v, %v", rep, err)
	}
}
