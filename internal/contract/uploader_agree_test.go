package contract_test

import (
	"slices"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/uploader"
)

// TestCompressionsAgree: the webhook validates dumpcatcher.io/compression
// and upload.compression with contract.Compressions; the uploader refuses at
// start what uploader.Compressions does not list.
func TestCompressionsAgree(t *testing.T) {
	if got, want := contract.Compressions(), uploader.Compressions(); !slices.Equal(got, want) {
		t.Errorf("contract.Compressions() = %q, uploader.Compressions() = %q", got, want)
	}
	if !slices.Contains(uploader.Compressions(), contract.DefaultCompression) {
		t.Errorf("DefaultCompression %q is not an uploader compression", contract.DefaultCompression)
	}
}

func TestParsePositiveDuration(t *testing.T) {
	for in, ok := range map[string]bool{"25s": true, "2m": true, "1h30m": true, "0s": false, "-1s": false, "25": false, "": false, "soon": false} {
		_, err := contract.ParsePositiveDuration(in)
		if (err == nil) != ok {
			t.Errorf("ParsePositiveDuration(%q) = %v, want ok=%v", in, err, ok)
		}
	}
}
