// Package syncbuf is a bytes.Buffer that a process (or a goroutine) may
// write while a test reads it: the output of a child process or of a
// function that may still be running.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer collects writes; String returns everything written so far. The
// zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
