package progress

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLine(t *testing.T) {
	for _, tc := range []struct {
		done, total, moved int64
		took               time.Duration
		want               string
	}{
		{0, 100, 0, 0, "d [                              ]   0% 0 B / 100 B"},
		{50 << 20, 100 << 20, 50 << 20, 10 * time.Second, "d [===============               ]  50% 50.0 MiB / 100.0 MiB 5.0 MiB/s"},
		{3 << 30, -1, 1 << 30, time.Second, "d 3.0 GiB 1.0 GiB/s"},
	} {
		if got := Line("d", tc.done, tc.total, tc.moved, tc.took); got != tc.want {
			t.Errorf("Line(%d, %d) =\n%q\nwant\n%q", tc.done, tc.total, got, tc.want)
		}
	}
}

func TestBarPiped(t *testing.T) {
	now := time.Unix(0, 0)
	var out strings.Builder
	b := &Bar{W: &out, Label: "d", Now: func() time.Time { return now }}
	for i := int64(0); i <= 10; i++ {
		b.Update(i*10, 100)
		now = now.Add(time.Second)
	}
	b.Finish()
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	// At 0 s, 5 s, 10 s, and the final line.
	want := []string{
		"d [                              ]   0% 0 B / 100 B",
		"d [===============               ]  50% 50 B / 100 B 10 B/s",
		"d [==============================] 100% 100 B / 100 B 10 B/s",
		"d [==============================] 100% 100 B / 100 B 9 B/s",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
}

func TestBarTTY(t *testing.T) {
	now := time.Unix(0, 0)
	var out strings.Builder
	b := &Bar{W: &out, TTY: true, Label: "d", Now: func() time.Time { return now }}
	b.Update(0, 10)
	b.Update(5, 10) // within 200 ms: not redrawn
	now = now.Add(time.Second)
	b.Update(10, 10)
	b.Finish()
	if n := strings.Count(out.String(), "\r"); n != 3 || !strings.HasSuffix(out.String(), "\x1b[K\n") || strings.Contains(out.String(), " 50%") {
		t.Errorf("terminal output %q: want 3 redraws (start, 1 s, finish), no 50%% and a final newline", out.String())
	}
}
