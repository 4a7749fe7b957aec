package fielderr

import (
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestLines(t *testing.T) {
	errs := field.ErrorList{
		field.Invalid(field.NewPath("upload", "compression"), "lz4", `"lz4" is not one of gzip, zstd, none`),
		field.Invalid(field.NewPath("destination"), field.OmitValueType{}, "credentials must not be part of the URL"),
		field.Required(field.NewPath("excludedNamespaces").Index(2), "a namespace name"),
	}
	want := `upload.compression: "lz4" is not one of gzip, zstd, none` + "\n" +
		"destination: credentials must not be part of the URL\n" +
		"excludedNamespaces[2]: a namespace name"
	if got := Lines(errs, Path); got != want {
		t.Errorf("Lines:\n%s\nwant:\n%s", got, want)
	}
	if got := Lines(errs[:1], func(e *field.Error) string { return "--" + e.Field }); got != `--upload.compression: "lz4" is not one of gzip, zstd, none` {
		t.Errorf("Lines with a where of its own = %q", got)
	}
	if got := Lines(nil, Path); got != "" {
		t.Errorf("Lines(nil) = %q", got)
	}
}

func TestFileError(t *testing.T) {
	errs := field.ErrorList{
		field.Invalid(field.NewPath("presign", "expiry"), "0s", "want 1s to 168h"),
		field.Required(field.NewPath("destinations"), "name at least one"),
	}
	if got, want := (&FileError{File: "/etc/c.yaml", Errs: errs}).Error(), "config /etc/c.yaml: presign.expiry: want 1s to 168h\nconfig /etc/c.yaml: destinations: name at least one"; got != want {
		t.Errorf("with a file:\n%s\nwant:\n%s", got, want)
	}
	if got, want := (&FileError{Errs: errs[1:]}).Error(), "destinations: name at least one"; got != want {
		t.Errorf("without a file: %q, want %q", got, want)
	}
}
