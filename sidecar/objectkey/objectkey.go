// Package objectkey renders the object key a dump is stored under from a
// template such as the default
//
//	{namespace}/{workload}/{pod}/{container}/{time}-{reason}-{file}
//
// Every value is sanitised so that no key escapes its prefix: only letters,
// digits, '.', '_' and '-' survive (anything else, any byte of a non-ASCII
// character, a space or a control character, becomes '_'), a value is never
// "." or "..", values longer than 200 bytes are cut (a file name keeps its
// extension, such as ".hprof.gz"), and empty values become "unknown".
// Slashes come only from the template itself. So any file name an app may
// choose gives a valid key.
package objectkey

import (
	"fmt"
	"strings"
	"time"
)

// Default is the key template used when none is configured.
const Default = "{namespace}/{workload}/{pod}/{container}/{time}-{reason}-{file}"

// TimeLayout formats {time}: UTC, sortable, no colons (some stores and
// tools dislike them), millisecond precision.
const TimeLayout = "20060102T150405.000Z"

// maxValue bounds one rendered value; S3 keys may be 1,024 bytes long.
const maxValue = 200

// Fields are the values a template may use.
type Fields struct {
	Namespace string
	// Workload is kind/name, e.g. deployment/web; it renders as
	// "deployment-web" so that it stays one path segment.
	Workload  string
	Pod       string
	Container string
	Node      string
	// Reason: oom, prestop or manual.
	Reason string
	// File is the dump's file name, with the compression suffix.
	File string
	Time time.Time
}

func (f Fields) value(name string) (string, bool) {
	switch name {
	case "namespace":
		return f.Namespace, true
	case "workload":
		return strings.ReplaceAll(f.Workload, "/", "-"), true
	case "pod":
		return f.Pod, true
	case "container":
		return f.Container, true
	case "node":
		return f.Node, true
	case "reason":
		return f.Reason, true
	case "file":
		return f.File, true
	case "time":
		if f.Time.IsZero() {
			return "", true
		}
		return f.Time.UTC().Format(TimeLayout), true
	case "date":
		if f.Time.IsZero() {
			return "", true
		}
		return f.Time.UTC().Format("2006-01-02"), true
	}
	return "", false
}

// Placeholders lists the names a template may use, in documentation order.
func Placeholders() []string {
	return []string{"namespace", "workload", "pod", "container", "node", "reason", "file", "time", "date"}
}

// Template is a parsed key template.
type Template struct {
	parts []part
}

type part struct {
	literal string
	field   string
}

// Parse checks a template: placeholders must be known and closed, literal
// text may hold letters, digits, '.', '_', '-' and '/', the key must not
// start or end with '/', have empty or dot segments, and it must use {file}
// and {time} so that two dumps never share a key.
func Parse(tmpl string) (Template, error) {
	var t Template
	rest := tmpl
	used := map[string]bool{}
	for rest != "" {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			t.parts = append(t.parts, part{literal: rest})
			break
		}
		if i > 0 {
			t.parts = append(t.parts, part{literal: rest[:i]})
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return Template{}, fmt.Errorf("key template %q: unclosed {", tmpl)
		}
		name := rest[i+1 : i+j]
		if _, ok := (Fields{}).value(name); !ok {
			return Template{}, fmt.Errorf("key template %q: unknown placeholder {%s}; known: {%s}", tmpl, name, strings.Join(Placeholders(), "}, {"))
		}
		used[name] = true
		t.parts = append(t.parts, part{field: name})
		rest = rest[i+j+1:]
	}
	for _, p := range t.parts {
		if p.field == "" {
			for _, r := range p.literal {
				if !safe(r) && r != '/' {
					return Template{}, fmt.Errorf("key template %q: character %q is not allowed outside placeholders (use letters, digits, . _ - and /)", tmpl, r)
				}
			}
		}
	}
	if !used["file"] || !used["time"] {
		return Template{}, fmt.Errorf("key template %q: must use {file} and {time}, so that two dumps never share a key", tmpl)
	}
	sample, err := t.Render(Fields{Namespace: "n", Workload: "w", Pod: "p", Container: "c", Node: "x", Reason: "r", File: "f", Time: time.Unix(1, 0)})
	if err != nil {
		return Template{}, err
	}
	for _, seg := range strings.Split(sample, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return Template{}, fmt.Errorf("key template %q: empty, . or .. path segment (no leading, trailing or double slashes)", tmpl)
		}
	}
	return t, nil
}

// MustParse is Parse for templates known to be valid (tests, Default).
func MustParse(tmpl string) Template {
	t, err := Parse(tmpl)
	if err != nil {
		panic(err)
	}
	return t
}

// Render fills the template with sanitised values.
func (t Template) Render(f Fields) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.field == "" {
			b.WriteString(p.literal)
			continue
		}
		v, _ := f.value(p.field)
		if p.field == "file" {
			v = keepExtension(v)
		}
		b.WriteString(Sanitize(v))
	}
	key := b.String()
	if len(key) > 1024 {
		return "", fmt.Errorf("object key is %d bytes long; S3 allows 1024: shorten the key template", len(key))
	}
	return key, nil
}

// maxExtension bounds the extension keepExtension keeps.
const maxExtension = 16

// keepExtension cuts a file name longer than maxValue so that its
// extension (from the first '.' of its last maxExtension bytes, such as
// ".hprof.gz") survives the cut Sanitize makes.
func keepExtension(v string) string {
	if len(v) <= maxValue {
		return v
	}
	tail := v[len(v)-maxExtension:]
	i := strings.IndexByte(tail, '.')
	if i < 0 {
		return v
	}
	ext := tail[i:]
	return v[:maxValue-len(ext)] + ext
}

func safe(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
}

// Sanitize makes a value safe as one key segment.
func Sanitize(v string) string {
	if len(v) > maxValue {
		v = v[:maxValue]
	}
	s := strings.Map(func(r rune) rune {
		if safe(r) {
			return r
		}
		return '_'
	}, v)
	switch s {
	case "":
		return "unknown"
	case ".", "..":
		return strings.Repeat("_", len(s))
	}
	return s
}
