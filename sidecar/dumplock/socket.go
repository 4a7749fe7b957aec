package dumplock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// The protocol on the socket, one line each way:
//
//	client: LOCK <ttl in milliseconds>
//	server: OK <expires, RFC 3339>
//	        TAKEN <expires, RFC 3339> <holder>
//	        UNAVAILABLE <why>
//
// After OK the client keeps the connection open while it dumps; the lock is
// released when the connection closes, however the client ends.
//
//	client: WHERE <container or -> <file>
//	server: AT <url the dump will be uploaded to>
//	        UNAVAILABLE <why>

// ErrUnavailable is returned (wrapped) by Request when no lock could be
// taken for a reason other than another holder: no sidecar answering, a
// store without conditional writes, a store that is down. The dump command
// then dumps anyway: a dump matters more than the coordination.
var ErrUnavailable = errors.New("dump lock unavailable")

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
	Log          *zap.Logger

	mu    sync.Mutex
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
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
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

func (s *Server) handle(ctx context.Context, conn net.Conn) {
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(conn, 256)).ReadString('\n')
	if err != nil {
		return
	}
	var ms int64
	f := strings.Fields(line)
	if len(f) == 3 && f[0] == "WHERE" {
		s.where(conn, f[1], f[2])
		return
	}
	if len(f) == 2 && f[0] == "LOCK" {
		ms, _ = strconv.ParseInt(f[1], 10, 64)
	}
	if ms <= 0 {
		fmt.Fprintf(conn, "UNAVAILABLE bad request %q\n", strings.TrimSpace(line))
		return
	}
	ttl := time.Duration(ms) * time.Millisecond
	le, err := s.join(ctx, ttl)
	var taken *TakenError
	switch {
	case errors.As(err, &taken):
		s.Log.Info("dump lock taken by another pod: this pod skips its preStop dump",
			zap.String("holder", taken.Holder), zap.Time("expires", taken.Expires))
		fmt.Fprintf(conn, "TAKEN %s %s\n", taken.Expires.UTC().Format(time.RFC3339Nano), taken.Holder)
		return
	case err != nil:
		s.Log.Warn("dump lock unavailable: the preStop dump goes ahead without it", zap.Error(err))
		fmt.Fprintf(conn, "UNAVAILABLE %s\n", oneLine(err.Error()))
		return
	}
	defer s.leave()
	if _, err := fmt.Fprintf(conn, "OK %s\n", le.Expires().UTC().Format(time.RFC3339Nano)); err != nil {
		return
	}
	// Held until the client closes (or dies, or ctx ends).
	_ = conn.SetReadDeadline(time.Time{})
	_, _ = io.Copy(io.Discard, conn)
}

func (s *Server) where(conn net.Conn, container, file string) {
	if container == "-" {
		container = ""
	}
	if s.Where == nil {
		fmt.Fprintf(conn, "UNAVAILABLE this uploader cannot tell\n")
		return
	}
	url, err := s.Where(container, file)
	if err != nil {
		fmt.Fprintf(conn, "UNAVAILABLE %s\n", oneLine(err.Error()))
		return
	}
	fmt.Fprintf(conn, "AT %s\n", url)
}

// join takes the lease for this pod, or shares the one it already holds.
func (s *Server) join(ctx context.Context, ttl time.Duration) (*Lease, error) {
	if s.Key == "" {
		return nil, errors.New("the uploader does not know its workload (DUMPCATCHER_WORKLOAD and DUMPCATCHER_POD_NAMESPACE are set by the webhook)")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease != nil && s.Locks.now().Before(s.lease.Expires()) {
		s.users++
		return s.lease, nil
	}
	actx, cancel := context.WithTimeout(ctx, s.storeTimeout())
	defer cancel()
	le, err := s.Locks.Acquire(actx, s.Key, s.Holder, ttl)
	if err != nil {
		return nil, err
	}
	s.Log.Info("dump lock taken for this pod's preStop dump", zap.String("key", s.Key), zap.Time("expires", le.Expires()))
	s.lease, s.users = le, 1
	return le, nil
}

func (s *Server) leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users--; s.users > 0 || s.lease == nil {
		return
	}
	le := s.lease
	s.lease = nil
	// Released even when the server is shutting down: a fresh context.
	ctx, cancel := context.WithTimeout(context.Background(), s.storeTimeout())
	defer cancel()
	if err := le.Release(ctx); err != nil {
		s.Log.Warn("could not release the dump lock; it expires by itself", zap.Time("expires", le.Expires()), zap.Error(err))
		return
	}
	s.Log.Info("dump lock released", zap.String("key", s.Key))
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Where asks the sidecar listening at socket where it will upload the dump
// file of container ("" when not known).
func Where(ctx context.Context, socket, container, file string) (string, error) {
	if container == "" {
		container = "-"
	}
	if strings.ContainsAny(container+file, " \t\n") {
		return "", fmt.Errorf("%w: names with spaces", ErrUnavailable)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return "", fmt.Errorf("%w: no answer from the dumpcatcher sidecar at %s: %v", ErrUnavailable, socket, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if _, err := fmt.Fprintf(conn, "WHERE %s %s\n", container, file); err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	line, err := bufio.NewReader(io.LimitReader(conn, 4096)).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("%w: no answer from the dumpcatcher sidecar at %s: %v", ErrUnavailable, socket, err)
	}
	word, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	switch word {
	case "AT":
		return rest, nil
	case "UNAVAILABLE":
		return "", fmt.Errorf("%w: %s", ErrUnavailable, rest)
	}
	return "", fmt.Errorf("%w: bad answer %q", ErrUnavailable, line)
}

// Request asks the sidecar listening at socket for the workload's dump lock
// for ttl. On success it returns a release function (call it when the dump
// is done; the lock is also released if this process dies) and when the lock
// expires. Otherwise the error is a *TakenError or wraps ErrUnavailable.
func Request(ctx context.Context, socket string, ttl time.Duration) (release func(), expires time.Time, err error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("%w: no answer from the dumpcatcher sidecar at %s: %v", ErrUnavailable, socket, err)
	}
	fail := func(err error) (func(), time.Time, error) {
		conn.Close()
		return nil, time.Time{}, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if _, err := fmt.Fprintf(conn, "LOCK %d\n", ttl.Milliseconds()); err != nil {
		return fail(fmt.Errorf("%w: %v", ErrUnavailable, err))
	}
	line, err := bufio.NewReader(io.LimitReader(conn, 4096)).ReadString('\n')
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fail(fmt.Errorf("%w: no answer from the dumpcatcher sidecar at %s: %v", ErrUnavailable, socket, err))
	}
	word, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	switch word {
	case "OK":
		exp, err := time.Parse(time.RFC3339Nano, rest)
		if err != nil {
			return fail(fmt.Errorf("%w: bad answer %q", ErrUnavailable, line))
		}
		if !stop() {
			return fail(fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err()))
		}
		return func() { conn.Close() }, exp, nil
	case "TAKEN":
		at, holder, _ := strings.Cut(rest, " ")
		exp, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return fail(fmt.Errorf("%w: bad answer %q", ErrUnavailable, line))
		}
		return fail(&TakenError{Holder: holder, Expires: exp})
	case "UNAVAILABLE":
		return fail(fmt.Errorf("%w: %s", ErrUnavailable, rest))
	}
	return fail(fmt.Errorf("%w: bad answer %q", ErrUnavailable, line))
}
