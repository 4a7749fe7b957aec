// Package dumpkey maps object keys to Dump names and objects, and names
// back to keys, without I/O.
//
// Keys are relative to a destination's prefix and must start with
// "<namespace>/" (the uploader's default template,
// {namespace}/{workload}/{pod}/{container}/{time}-{reason}-{file}); the part
// after it is the relative key. A name is a readable part
// (<pod>-<container>-<time>-<reason>, lower-cased, anything but letters and
// digits turned into '-', cut to 80 bytes) and '-' and 10 base32 characters
// of the SHA-256 of the relative key: a valid DNS-1123 subdomain, stable,
// and, through the hash, distinct for distinct keys in practice. A name is
// resolved by listing "<namespace>/" and comparing exactly (Match), so no
// name can address a key outside its namespace's prefix.
package dumpkey

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"path"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/dumpcatcher/dumpcatcher/dumpsapi/apis/dumps/v1alpha1"
	"github.com/dumpcatcher/dumpcatcher/sidecar/objectkey"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
)

// Reasons the uploader writes, longest first where one is a prefix of
// another.
var reasons = []string{"gc-pressure", "prestop", "manual", "crash", "core", "oom"}

// maxReadable bounds the readable part of a name.
const maxReadable = 80

// hashLen is the number of base32 characters of the key's hash in a name.
const hashLen = 10

// Prefix returns "<namespace>/", the only key prefix the namespace may
// address, or an error when namespace is not a valid namespace name (a
// DNS-1123 label: no '/', '.', or "..").
func Prefix(namespace string) (string, error) {
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return "", fmt.Errorf("namespace %q: %s", namespace, strings.Join(errs, "; "))
	}
	return namespace + "/", nil
}

// Hidden reports whether a relative key is never a dump: a hidden segment
// (".dumpcatcher/" locks, ".tmp-*" temporary files), the file backend's
// "*.meta.json", or a key storage.ValidateKey rejects.
func Hidden(rel string) bool {
	if storage.ValidateKey(rel) != nil || strings.HasSuffix(rel, ".meta.json") {
		return true
	}
	for _, seg := range strings.Split(rel, "/") {
		if strings.HasPrefix(seg, ".") {
			return true
		}
	}
	return false
}

// Parsed is what the default template puts into a relative key. Fields the
// key does not hold are empty.
type Parsed struct {
	Workload, Pod, Container, Reason, File string
	Time                                   time.Time
}

// Parse reads a relative key of the default template,
// <workload>/<pod>/<container>/<time>-<reason>-<file>. Other shapes give
// File = the last segment and nothing else.
func Parse(rel string) Parsed {
	segs := strings.Split(rel, "/")
	last := segs[len(segs)-1]
	if len(segs) != 4 {
		return Parsed{File: last}
	}
	p := Parsed{Workload: segs[0], Pod: segs[1], Container: segs[2], File: last}
	n := len(objectkey.TimeLayout)
	if len(last) <= n || last[n] != '-' {
		return p
	}
	t, err := time.Parse(objectkey.TimeLayout, last[:n])
	if err != nil {
		return p
	}
	rest := last[n+1:]
	for _, r := range reasons {
		if f, ok := strings.CutPrefix(rest, r+"-"); ok && f != "" {
			p.Time, p.Reason, p.File = t.UTC(), r, f
			return p
		}
	}
	// An unknown reason: up to the next '-'.
	if r, f, ok := strings.Cut(rest, "-"); ok && r != "" && f != "" {
		p.Time, p.Reason, p.File = t.UTC(), r, f
	}
	return p
}

// Name is the Dump name of a relative key. salt is "" for the first
// configured destination and the destination's name for the others, so that
// the same key in two destinations gives two names (and the first
// destination's names do not change when others are added).
func Name(salt, rel string) string {
	in := rel
	if salt != "" {
		in = salt + "\x00" + rel
	}
	sum := sha256.Sum256([]byte(in))
	h := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))[:hashLen]
	p := Parse(rel)
	var parts []string
	if p.Pod != "" {
		parts = append(parts, p.Pod, p.Container)
		if !p.Time.IsZero() {
			parts = append(parts, p.Time.Format(objectkey.TimeLayout), p.Reason)
		}
	} else {
		parts = append(parts, p.File)
	}
	readable := sanitize(strings.Join(parts, "-"))
	if readable == "" {
		readable = "dump"
	}
	return readable + "-" + h
}

// sanitize lower-cases s, turns every run of other characters than [a-z0-9]
// into one '-', trims '-' and cuts it to maxReadable bytes.
func sanitize(s string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(s) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(c)
			continue
		}
		dash = true
	}
	out := b.String()
	if len(out) > maxReadable {
		out = strings.TrimRight(out[:maxReadable], "-")
	}
	return out
}

// Match reports whether key (relative to the prefix of the destination of
// salt, see Name) is the dump called name in namespace, and returns its
// relative key. Only keys under "<namespace>/" that are not Hidden can
// match.
func Match(salt, namespace, name, key string) (string, bool) {
	prefix, err := Prefix(namespace)
	if err != nil {
		return "", false
	}
	rel, ok := strings.CutPrefix(key, prefix)
	if !ok || Hidden(rel) || Name(salt, rel) != name {
		return "", false
	}
	return rel, true
}

// Object is what the store says about one object.
type Object struct {
	// Key relative to the destination's prefix, "<namespace>/<rel>".
	Key string
	// Size in bytes, LastModified as stored.
	Size         int64
	LastModified time.Time
	// Metadata (lower-case keys, values as stored: percent-encoded); nil
	// when the store did not return it (a list from AWS S3).
	Metadata map[string]string
	// URL of the object; Destination the configured destination's name.
	URL, Destination string
	// Salt is Name's salt: "" for the first destination, else its name.
	Salt string
	// ContentEncoding as stored, used when the metadata has no encoding.
	ContentEncoding string
}

// Dump builds the Dump of o in namespace, or false when o is not one
// (outside the namespace's prefix, or hidden).
func Dump(namespace string, o Object) (v1alpha1.Dump, bool) {
	prefix, err := Prefix(namespace)
	if err != nil {
		return v1alpha1.Dump{}, false
	}
	rel, ok := strings.CutPrefix(o.Key, prefix)
	if !ok || Hidden(rel) {
		return v1alpha1.Dump{}, false
	}
	p := Parse(rel)
	md := func(k string) string {
		v, ok := o.Metadata[k]
		if !ok || v == "unknown" {
			return ""
		}
		if d, err := storage.DecodeMetadataValue(v); err == nil {
			return d
		}
		return ""
	}
	or := func(a, b string) string {
		if a != "" {
			return a
		}
		return b
	}
	t := p.Time
	if t.IsZero() {
		t = o.LastModified.UTC()
	}
	d := v1alpha1.Dump{
		TypeMeta: metav1.TypeMeta{Kind: "Dump", APIVersion: v1alpha1.SchemeGroupVersion.String()},
		ObjectMeta: metav1.ObjectMeta{
			Name:              Name(o.Salt, rel),
			Namespace:         namespace,
			CreationTimestamp: metav1.NewTime(t),
		},
		Workload:    or(md("workload"), p.Workload),
		Pod:         or(md("pod"), p.Pod),
		PodUID:      md("pod-uid"),
		Node:        md("node"),
		Container:   or(md("container"), p.Container),
		Reason:      or(md("reason"), p.Reason),
		File:        or(md("file"), path.Base(p.File)),
		Encoding:    md("encoding"),
		Size:        o.Size,
		SHA256:      md(storage.MetaSHA256),
		URL:         o.URL,
		Destination: o.Destination,
		Time:        metav1.NewTime(t),
	}
	switch md("complete") {
	case "true":
		yes := true
		d.Complete = &yes
	case "false":
		no := false
		d.Complete = &no
	}
	if d.Encoding == "" {
		d.Encoding = o.ContentEncoding
	}
	if o.Metadata != nil && d.Encoding == "" || d.Encoding == "identity" {
		d.Encoding = "none"
	}
	var n int64
	if _, err := fmt.Sscan(md("original-size"), &n); err == nil && n >= 0 {
		d.OriginalSize = n
	}
	labels := map[string]string{}
	// Labels hold the key's segments (as the key spells the workload,
	// e.g. deployment-web), falling back to the metadata.
	for k, v := range map[string]string{
		v1alpha1.LabelWorkload:  or(p.Workload, strings.ReplaceAll(d.Workload, "/", "-")),
		v1alpha1.LabelPod:       d.Pod,
		v1alpha1.LabelContainer: d.Container,
		v1alpha1.LabelReason:    d.Reason,
	} {
		if v != "" && len(validation.IsValidLabelValue(v)) == 0 {
			labels[k] = v
		}
	}
	if len(labels) > 0 {
		d.Labels = labels
	}
	return d, true
}
