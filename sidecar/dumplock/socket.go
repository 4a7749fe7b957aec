package dumplock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
)

// The protocol on the socket, one line each way:
//
//	client: LOCK <ttl in milliseconds>
//	server: OK <expires, RFC 3339>
//	        TAKEN <expires, RFC 3339> <holder>
//	        UNAVAILABLE <why>
//	        BUSY <why>
//
// After OK the client keeps the connection open while it dumps; the lock is
// released when the connection closes, however the client ends, and at the
// latest when the lease expires (the server then closes the connection).
//
//	client: WHERE <container or -> <file>
//	server: AT <url the dump will be uploaded to>
//	        UNAVAILABLE <why>
//	        BUSY <why>
//
// BUSY says that the server has as many connections open as it serves
// (Server.MaxConns); the client may try again.
//
// Anything in the app container may connect (the socket is in the shared
// volume, mode 0666), so the server trusts nothing it is sent: a lock lasts
// at most Server.MaxTTL, at most Server.MaxConns connections are served at
// once (the others are answered BUSY and closed at once), and a client that
// does not send its request line within Server.RequestTimeout is dropped.

// ErrUnavailable is returned (wrapped) by Request when no lock could be
// taken for a reason other than another holder: no sidecar answering, a
// store without conditional writes, a store that is down. The dump command
// then dumps anyway: a dump matters more than the coordination.
var ErrUnavailable = errors.New("dump lock unavailable")

// Defaults of the Server's limits.
const (
	// DefaultMaxConns is how many connections a Server serves at once: one
	// per dump command of the pod's containers, which are few.
	DefaultMaxConns = 16
	// DefaultRequestTimeout is how long a client has to send its request
	// line after connecting; the dump command sends it at once.
	DefaultRequestTimeout = 2 * time.Second
)

// Server takes the lock of one workload for the dump commands of its pod.
// Several containers of the pod share one lease; it is released when the
// last of them closes its connection.
type Server struct {
	Locks Locks
	// Key is the workload's lock object (Key), empty when the sidecar does
	// not know its workload: every request is then answered UNAVAILABLE.
	Key string
	// Holder names this pod (namespace/name).
	Holder string
	// Where tells where a dump file of a container will be uploaded
	// (container "" when the client does not know it); nil: WHERE is
	// answered UNAVAILABLE.
	Where func(container, file string) (string, error)
	// StoreTimeout bounds each store request (5 s when zero).
	StoreTimeout time.Duration
	// MaxTTL is the longest lock a client may ask for: MaxTTL(the pod's
	// grace period) when the sidecar knows it, DefaultMaxTTL when zero.
	// Longer requests are answered UNAVAILABLE.
	MaxTTL time.Duration
	// MaxConns is how many connections are served at once
	// (DefaultMaxConns when zero).
	MaxConns int
	// RequestTimeout bounds the wait for a client's request line
	// (DefaultRequestTimeout when zero).
	RequestTimeout time.Duration
	Log            logr.Logger

	mu  sync.Mutex
	cur *shared // the lease this pod's dump commands share, nil when none

	longTTLs every // spaces the log lines about refused TTLs
}

// every lets a log line about something the app can repeat at will through
// at most once per busyLogEvery, with the count of occurrences.
type every struct {
	mu   sync.Mutex
	last time.Time
	n    int
}

// tick counts an occurrence and reports whether to log it, with the count
// since the last line.
func (e *every) tick(now time.Time) (int, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	if !e.last.IsZero() && now.Sub(e.last) < busyLogEvery {
		return 0, false
	}
	n := e.n
	e.last, e.n = now, 0
	return n, true
}

// shared is one lease and the connections that hold it. A lease that
// expired while held is replaced by a new one for later clients; its own
// holders keep (and finally release) only it, never its successor.
type shared struct {
	lease *Lease
	users int
}

// Listen creates the Unix socket at path (replacing a stale one), connectable
// by any uid: the app container may run as another user than the sidecar.
func Listen(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func (s *Server) maxTTL() time.Duration {
	if s.MaxTTL > 0 {
		return s.MaxTTL
	}
	return DefaultMaxTTL
}

func (s *Server) maxConns() int {
	if s.MaxConns > 0 {
		return s.MaxConns
	}
	return DefaultMaxConns
}

func (s *Server) requestTimeout() time.Duration {
	if s.RequestTimeout > 0 {
		return s.RequestTimeout
	}
	return DefaultRequestTimeout
}

// busyLogEvery spaces the log lines about refused connections and
// requests: a flood would otherwise flood the log too.
const busyLogEvery = 10 * time.Second

// Serve answers on ln until ctx ends, then closes ln and every connection
// and returns when all handlers are done.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	slots := make(chan struct{}, s.maxConns())
	var busy every
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors: wait for connections to end.
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			return err
		}
		select {
		case slots <- struct{}{}:
		default:
			// Full: answer without a goroutine and close at once. The
			// write cannot block on a fresh connection; the deadline
			// makes sure.
			_ = conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			fmt.Fprintf(conn, "BUSY %d connections are being served\n", cap(slots))
			conn.Close()
			if n, ok := busy.tick(time.Now()); ok {
				s.Log.Info("dump lock socket: too many connections; refusing more (something in the app container opens connections and keeps them open)",
					"maxConnections", cap(slots), "refusedSinceLastLine", n)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			defer stop()
			defer conn.Close()
			s.handle(ctx, conn)
		}()
	}
}

func (s *Server) storeTimeout() time.Duration {
	if s.StoreTimeout > 0 {
		return s.StoreTimeout
	}
	return 5 * time.Second
}

// answer writes one line to the client, which has this long to take it.
func answer(conn net.Conn, format string, a ...any) error {
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := fmt.Fprintf(conn, format, a...)
	return err
}

func (s *Server) handle(ctx context.Context, conn net.Conn) {
	_ = conn.SetReadDeadline(time.Now().Add(s.requestTimeout()))
	line, err := bufio.NewReader(io.LimitReader(conn, 256)).ReadString('\n')
	if err != nil {
		return
	}
	f := strings.Fields(line)
	if len(f) == 3 && f[0] == "WHERE" {
		s.where(conn, f[1], f[2])
		return
	}
	var ms int64 = -1
	if len(f) == 2 && f[0] == "LOCK" {
		if ms, err = strconv.ParseInt(f[1], 10, 64); err != nil && errors.Is(err, strconv.ErrRange) {
			ms = math.MaxInt64
		}
	}
	maxTTL := s.maxTTL()
	switch {
	case ms <= 0:
		_ = answer(conn, "UNAVAILABLE bad request %q: want LOCK <milliseconds> or WHERE <container> <file>\n", oneLine(strings.ToValidUTF8(line, "?")))
		return
	case ms > maxTTL.Milliseconds():
		if n, ok := s.longTTLs.tick(time.Now()); ok {
			s.Log.Info("dump lock: refused a lock longer than the pod can live (something in the app container asks for it; the dump command never does)",
				"ttlMillis", ms, "max", maxTTL, "refusedSinceLastLine", n)
		}
		_ = answer(conn, "UNAVAILABLE ttl %dms is too long: a dump lock lasts at most %v (the pod's grace period plus %v)\n", ms, maxTTL, Margin)
		return
	}
	ttl := time.Duration(ms) * time.Millisecond
	sh, err := s.join(ctx, ttl)
	var taken *TakenError
	switch {
	case errors.As(err, &taken):
		s.Log.Info("dump lock taken by another pod: this pod skips its preStop dump",
			"holder", taken.Holder, "expires", taken.Expires)
		_ = answer(conn, "TAKEN %s %s\n", taken.Expires.UTC().Format(time.RFC3339Nano), taken.Holder)
		return
	case err != nil:
		s.Log.Info("dump lock unavailable: the preStop dump goes ahead without it", "error", err)
		_ = answer(conn, "UNAVAILABLE %s\n", oneLine(err.Error()))
		return
	}
	defer s.leave(sh)
	// Held until the client closes (or dies, or ctx ends), and no longer
	// than the lease lasts.
	exp := sh.lease.Expires()
	holdUntil := time.Now().Add(exp.Sub(s.Locks.now()))
	if err := answer(conn, "OK %s\n", exp.UTC().Format(time.RFC3339Nano)); err != nil {
		return
	}
	_ = conn.SetReadDeadline(holdUntil)
	_, _ = io.Copy(io.Discard, conn)
}

func (s *Server) where(conn net.Conn, container, file string) {
	if container == "-" {
		container = ""
	}
	if s.Where == nil {
		_ = answer(conn, "UNAVAILABLE this uploader cannot tell\n")
		return
	}
	url, err := s.Where(container, file)
	if err != nil {
		_ = answer(conn, "UNAVAILABLE %s\n", oneLine(err.Error()))
		return
	}
	_ = answer(conn, "AT %s\n", url)
}

// join takes the lease for this pod, or shares the one it already holds
// while that one lasts.
func (s *Server) join(ctx context.Context, ttl time.Duration) (*shared, error) {
	if s.Key == "" {
		return nil, errors.New("the uploader does not know its workload (DUMPCATCHER_WORKLOAD and DUMPCATCHER_POD_NAMESPACE are set by the webhook)")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && s.Locks.now().Before(s.cur.lease.Expires()) {
		s.cur.users++
		return s.cur, nil
	}
	actx, cancel := context.WithTimeout(ctx, s.storeTimeout())
	defer cancel()
	le, err := s.Locks.Acquire(actx, s.Key, s.Holder, ttl)
	if err != nil {
		return nil, err
	}
	s.Log.Info("dump lock taken for this pod's preStop dump", "key", s.Key, "expires", le.Expires())
	// An expired predecessor stays with its remaining holders.
	s.cur = &shared{lease: le, users: 1}
	return s.cur, nil
}

// leave lets go of sh; its last holder releases its lease.
func (s *Server) leave(sh *shared) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sh.users--; sh.users > 0 {
		return
	}
	if s.cur == sh {
		s.cur = nil
	}
	// Released even when the server is shutting down: a fresh context. The
	// release of a lease that expired and was taken over (by another pod,
	// or by this one's next dump command) changes nothing (Lease.Release).
	ctx, cancel := context.WithTimeout(context.Background(), s.storeTimeout())
	defer cancel()
	expired := !s.Locks.now().Before(sh.lease.Expires())
	if err := sh.lease.Release(ctx); err != nil {
		s.Log.Info("could not release the dump lock; it expires by itself", "expires", sh.lease.Expires(), "error", err)
		return
	}
	if expired {
		s.Log.Info("dump lock let go after it had expired (a lease taken since is not affected)", "key", s.Key, "expired", sh.lease.Expires())
		return
	}
	s.Log.Info("dump lock released", "key", s.Key)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// errBusy is a BUSY answer: the server serves as many connections as it
// will; the request may be tried again.
var errBusy = errors.New("busy")

// busyRetry is the wait before a request answered BUSY is sent again.
const busyRetry = 100 * time.Millisecond

// ask connects to socket, sends line and returns the connection and the
// first word and the rest of the answer line. It sends again while the
// server answers BUSY, until ctx ends. ctx closes the connection while ask
// runs; the caller closes it afterwards.
func ask(ctx context.Context, socket, line string) (net.Conn, string, string, error) {
	for {
		conn, word, rest, err := askOnce(ctx, socket, line)
		if !errors.Is(err, errBusy) {
			return conn, word, rest, err
		}
		t := time.NewTimer(busyRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, "", "", fmt.Errorf("%w: the dumpcatcher sidecar at %s is busy with other connections: %v", ErrUnavailable, socket, ctx.Err())
		case <-t.C:
		}
	}
}

func askOnce(ctx context.Context, socket, line string) (net.Conn, string, string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, "", "", fmt.Errorf("%w: no answer from the dumpcatcher sidecar at %s: %v", ErrUnavailable, socket, err)
	}
	fail := func(err error) (net.Conn, string, string, error) {
		conn.Close()
		return nil, "", "", err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	// A server that is full answers BUSY and closes at once, maybe before
	// the request is written: its answer is read even when the write failed.
	_, werr := fmt.Fprintf(conn, "%s\n", line)
	answer, err := bufio.NewReader(io.LimitReader(conn, 4096)).ReadString('\n')
	if !stop() {
		return fail(fmt.Errorf("%w: no answer from the dumpcatcher sidecar at %s: %v", ErrUnavailable, socket, ctx.Err()))
	}
	if err != nil {
		if werr != nil {
			err = werr
		}
		return fail(fmt.Errorf("%w: no answer from the dumpcatcher sidecar at %s: %v", ErrUnavailable, socket, err))
	}
	word, rest, _ := strings.Cut(strings.TrimSpace(answer), " ")
	if word == "BUSY" {
		return fail(errBusy)
	}
	return conn, word, rest, nil
}

// Where asks the sidecar listening at socket where it will upload the dump
// file of container ("" when not known).
func Where(ctx context.Context, socket, container, file string) (string, error) {
	if container == "" {
		container = "-"
	}
	if strings.ContainsAny(container+file, " \t\n") {
		return "", fmt.Errorf("%w: names with spaces", ErrUnavailable)
	}
	conn, word, rest, err := ask(ctx, socket, "WHERE "+container+" "+file)
	if err != nil {
		return "", err
	}
	conn.Close()
	switch word {
	case "AT":
		return rest, nil
	case "UNAVAILABLE":
		return "", fmt.Errorf("%w: %s", ErrUnavailable, rest)
	}
	return "", fmt.Errorf("%w: bad answer %q", ErrUnavailable, word+" "+rest)
}

// Request asks the sidecar listening at socket for the workload's dump lock
// for ttl. On success it returns a release function (call it when the dump
// is done; the lock is also released if this process dies) and when the lock
// expires. Otherwise the error is a *TakenError or wraps ErrUnavailable.
func Request(ctx context.Context, socket string, ttl time.Duration) (release func(), expires time.Time, err error) {
	conn, word, rest, err := ask(ctx, socket, fmt.Sprintf("LOCK %d", ttl.Milliseconds()))
	if err != nil {
		return nil, time.Time{}, err
	}
	fail := func(err error) (func(), time.Time, error) {
		conn.Close()
		return nil, time.Time{}, err
	}
	switch word {
	case "OK":
		exp, err := time.Parse(time.RFC3339Nano, rest)
		if err != nil {
			return fail(fmt.Errorf("%w: bad answer %q", ErrUnavailable, word+" "+rest))
		}
		return func() { conn.Close() }, exp, nil
	case "TAKEN":
		at, holder, _ := strings.Cut(rest, " ")
		exp, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return fail(fmt.Errorf("%w: bad answer %q", ErrUnavailable, word+" "+rest))
		}
		return fail(&TakenError{Holder: holder, Expires: exp})
	case "UNAVAILABLE":
		return fail(fmt.Errorf("%w: %s", ErrUnavailable, rest))
	}
	return fail(fmt.Errorf("%w: bad answer %q", ErrUnavailable, word+" "+rest))
}
