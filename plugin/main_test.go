package plugin

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no command leaves a goroutine behind (the
// decompressing pipe of download -o -, the page's access reviews and
// server); idle keep-alive connections of the HTTP clients are not leaks.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}
