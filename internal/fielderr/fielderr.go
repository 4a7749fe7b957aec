// Package fielderr renders the problems of a configuration, a
// field.ErrorList (k8s.io/apimachinery/pkg/util/validation/field), for
// people: one a line, each "<where>: <detail>". Both binaries use it, so
// that the uploader's flags and the webhook's configuration file report
// their problems alike.
package fielderr

import (
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Lines is errs one a line, each where(e) + ": " + e.Detail. The bad value
// is not repeated on its own (field.Error.Error would): a check puts it in
// the detail when it may be shown, and never when it may hold a secret.
func Lines(errs field.ErrorList, where func(*field.Error) string) string {
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = where(e) + ": " + e.Detail
	}
	return strings.Join(lines, "\n")
}

// Path is where for errors whose field path is what a person knows: a key
// of a configuration file, say.
func Path(e *field.Error) string { return e.Field }

// FileError is every problem of a configuration file: Error is one line a
// problem, the key's path (after "config FILE: " when File is set), then
// what is wrong.
type FileError struct {
	// File is the configuration file (empty: not read from a file).
	File string
	Errs field.ErrorList
}

func (e *FileError) Error() string {
	return Lines(e.Errs, func(fe *field.Error) string {
		if e.File != "" {
			return "config " + e.File + ": " + fe.Field
		}
		return fe.Field
	})
}
