// Package progress shows a download's progress: a bar redrawn in place on a
// terminal, plain lines every few seconds when the output is piped.
package progress

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Bar reports progress to W.
type Bar struct {
	W     io.Writer
	TTY   bool   // redraw one line with \r; else print a line per Every
	Label string // e.g. the dump's name
	Now   func() time.Time
	// Every is the interval of plain lines (5 s when zero); a terminal is
	// redrawn at most every 200 ms.
	Every time.Duration

	start, last time.Time
	first       int64 // bytes done at the start (a resumed download)
	done, total int64
	drawn       bool
}

const width = 30

// Update records done of total (-1: unknown) bytes and redraws when due.
func (b *Bar) Update(done, total int64) {
	now := b.Now()
	if b.start.IsZero() {
		b.start, b.first = now, done
	}
	b.done, b.total = done, total
	every := b.Every
	if every == 0 {
		every = 5 * time.Second
	}
	if b.TTY {
		every = 200 * time.Millisecond
	}
	if b.drawn && now.Sub(b.last) < every {
		return
	}
	b.last, b.drawn = now, true
	b.draw(now)
}

// Finish draws the final state and ends the line.
func (b *Bar) Finish() {
	if !b.drawn && b.start.IsZero() {
		return
	}
	b.draw(b.Now())
	if b.TTY {
		fmt.Fprintln(b.W)
	}
}

func (b *Bar) draw(now time.Time) {
	line := Line(b.Label, b.done, b.total, b.done-b.first, now.Sub(b.start))
	if b.TTY {
		fmt.Fprintf(b.W, "\r%s\x1b[K", line)
		return
	}
	fmt.Fprintln(b.W, line)
}

// Line renders one progress line: label, bar (when the total is known),
// percentage, bytes and rate (of the bytes moved in this run).
func Line(label string, done, total, moved int64, took time.Duration) string {
	var b strings.Builder
	b.WriteString(label)
	if total > 0 {
		filled := int(done * width / total)
		fmt.Fprintf(&b, " [%s%s] %3d%%", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), done*100/total)
		fmt.Fprintf(&b, " %s / %s", Bytes(done), Bytes(total))
	} else {
		fmt.Fprintf(&b, " %s", Bytes(done))
	}
	if took > 0 {
		fmt.Fprintf(&b, " %s/s", Bytes(int64(float64(moved)/took.Seconds())))
	}
	return b.String()
}

// Bytes is n in binary units (B, KiB, MiB, GiB, TiB) with one decimal.
func Bytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= 1024
		if v < 1024 || u == "TiB" {
			return fmt.Sprintf("%.1f %s", v, u)
		}
	}
	return ""
}
