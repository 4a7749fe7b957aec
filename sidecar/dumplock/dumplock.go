// Package dumplock lets at most one pod of a workload take a preStop heap
// dump at a time, so that a failing Deployment whose replicas are all
// deleted at once is not frozen replica by replica for dumps all together.
//
// The lock is a small JSON object in the dump destination itself, written
// with conditional writes (storage.Conditional: If-None-Match / If-Match on
// S3). It carries an expiry: a holder that dies (its pod is killed at the
// end of the grace period) leaves a lock that the next pod takes over once
// it has expired. The destination is the one thing every replica already
// shares and has credentials for, so the lock needs no Kubernetes RBAC, no
// extra service and nothing in the app image; see docs/dump-hook.md, "The
// per-workload dump lock".
//
// The uploader sidecar holds the credentials, so it takes the lock on behalf
// of the dump command in the app container: Serve answers on a Unix socket
// in the shared volume, and the lock is held exactly as long as the dump
// command keeps its connection open (Request). A dump command that dies
// closes its connection and so releases the lock; a sidecar that dies leaves
// the lock to expire.
package dumplock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
)

// KeyPrefix starts the keys of lock objects, under the destination's
// prefix. Dump keys never start with a dot segment, so the two never mix.
const KeyPrefix = ".dumpcatcher/locks"

// Key is the lock object of a workload ("kind/name", as the webhook passes
// it) in a namespace.
func Key(namespace, workload string) (string, error) {
	kind, name, ok := strings.Cut(workload, "/")
	for _, s := range []string{namespace, kind, name} {
		if !ok || s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\\") {
			return "", fmt.Errorf("workload %q in namespace %q: want kind/name (DUMPCATCHER_WORKLOAD, set by the webhook) and a namespace (DUMPCATCHER_POD_NAMESPACE)", workload, namespace)
		}
	}
	return KeyPrefix + "/" + namespace + "/" + kind + "/" + name + ".json", nil
}

// Margin is added to the grace period for a lock's lifetime: the kubelet
// kills a pod at the end of its grace period, so a holder that dies there
// frees the workload this much later. The dump command asks for the time
// left until its deadline plus Margin.
const Margin = 5 * time.Second

// MaxGracePeriodSeconds is the longest grace period the webhook raises a pod
// to (minTerminationGracePeriodSeconds is at most 3600).
const MaxGracePeriodSeconds = 3600

// MaxTTL is the longest lock a pod with a grace period of graceSeconds can
// need: its whole grace period plus Margin. A longer one would outlive the
// pod and make the other pods of the workload skip their dumps for nothing.
func MaxTTL(graceSeconds int64) time.Duration {
	return time.Duration(graceSeconds)*time.Second + Margin
}

// DefaultMaxTTL caps locks when the sidecar does not know its pod's grace
// period: MaxTTL(MaxGracePeriodSeconds), 1h0m5s.
const DefaultMaxTTL = MaxGracePeriodSeconds*time.Second + Margin

// Record is the content of a lock object.
type Record struct {
	// Holder names the pod holding the lock (namespace/name).
	Holder string `json:"holder"`
	// Token is unique to one acquisition.
	Token string `json:"token"`
	// Acquired and Expires bound the lock; Released is set when the holder
	// let it go before it expired.
	Acquired time.Time `json:"acquired"`
	Expires  time.Time `json:"expires"`
	Released bool      `json:"released,omitempty"`
}

// Free reports whether another pod may take the lock at now.
func (r Record) Free(now time.Time) bool { return r.Released || !now.Before(r.Expires) }

// TakenError says that another pod holds the lock.
type TakenError struct {
	Holder  string
	Expires time.Time
}

func (e *TakenError) Error() string {
	return fmt.Sprintf("another pod of the workload is taking a heap dump (%s holds the dump lock until %s)", e.Holder, e.Expires.UTC().Format(time.RFC3339))
}

// Locks takes workload locks in a store.
type Locks struct {
	Store storage.Conditional
	// Now is time.Now when nil. Expiry is judged by the clocks of the pods
	// that compete for a lock, so node clocks must agree to within a small
	// part of the grace period (NTP does).
	Now func() time.Time
}

// Lease is a held lock.
type Lease struct {
	l       Locks
	key     string
	rec     Record
	version string
}

// Expires is when the lease ends unless released before.
func (le *Lease) Expires() time.Time { return le.rec.Expires }

func (l Locks) now() time.Time {
	if l.Now == nil {
		return time.Now()
	}
	return l.Now()
}

// maxTakeovers bounds the read-and-write rounds of Acquire; every round that
// fails lost a race to a pod that then holds the lock.
const maxTakeovers = 3

// Acquire takes the lock at key for holder for ttl. It returns a
// *TakenError when another holder's lock has not expired, and errors of the
// store as they are (storage.ErrNotSupported among them).
func (l Locks) Acquire(ctx context.Context, key, holder string, ttl time.Duration) (*Lease, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("dump lock: ttl %v is not positive", ttl)
	}
	var tok [12]byte
	_, _ = rand.Read(tok[:]) // never fails
	now := l.now()
	rec := Record{Holder: holder, Token: hex.EncodeToString(tok[:]), Acquired: now.UTC(), Expires: now.Add(ttl).UTC()}
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	version := "" // first try: only if there is no lock object yet
	var last Record
	for range maxTakeovers {
		v, err := l.Store.WriteIf(ctx, key, data, version)
		if err == nil {
			return &Lease{l: l, key: key, rec: rec, version: v}, nil
		}
		if !errors.Is(err, storage.ErrPrecondition) {
			return nil, fmt.Errorf("dump lock: %w", err)
		}
		cur, v, err := l.Store.ReadVersion(ctx, key)
		if errors.Is(err, storage.ErrNotExist) {
			version = "" // removed meanwhile (a lifecycle rule, say): create it
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("dump lock: %w", err)
		}
		if json.Unmarshal(cur, &last) != nil {
			last = Record{} // not ours to understand: take it over
		}
		if last.Token == rec.Token {
			// Our own write arrived although the store's answer did not
			// (a retried request then failed its condition).
			return &Lease{l: l, key: key, rec: rec, version: v}, nil
		}
		if !last.Free(l.now()) {
			return nil, &TakenError{Holder: last.Holder, Expires: last.Expires}
		}
		version = v // expired or released: replace exactly that version
	}
	return nil, &TakenError{Holder: last.Holder, Expires: last.Expires}
}

// Release marks the lock released, unless it has meanwhile expired and been
// taken over (then the new holder's lock stays as it is).
func (le *Lease) Release(ctx context.Context) error {
	rec := le.rec
	rec.Released = true
	rec.Expires = le.l.now().UTC()
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := le.l.Store.WriteIf(ctx, le.key, data, le.version); err != nil && !errors.Is(err, storage.ErrPrecondition) {
		return fmt.Errorf("dump lock: releasing: %w", err)
	}
	return nil
}
