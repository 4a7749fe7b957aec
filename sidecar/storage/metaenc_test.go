package storage

import (
	"strings"
	"testing"
)

func TestEncodeMetadataValue(t *testing.T) {
	tests := []struct{ in, want string }{
		{"java_pid1.hprof", "java_pid1.hprof"},
		{"deployment/web", "deployment/web"},
		{"", ""},
		{" ünïcode name .hprof", "%20%C3%BCn%C3%AFcode%20name%20.hprof"},
		{"tab\tnew\nline\x01\x7f.hprof", "tab%09new%0Aline%01%7F.hprof"},
		{"trailing space.hprof ", "trailing%20space.hprof%20"},
		{"%41 percent", "%2541%20percent"},
		{"a+b=c&d?e#f", "a+b=c&d?e#f"},
		{"not utf-8 \xff\xfe", "not%20utf-8%20%FF%FE"},
	}
	for _, tc := range tests {
		got := EncodeMetadataValue(tc.in)
		if got != tc.want {
			t.Errorf("EncodeMetadataValue(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if !validMetaValue(got) {
			t.Errorf("EncodeMetadataValue(%q) = %q is not a valid metadata value", tc.in, got)
		}
		back, err := DecodeMetadataValue(got)
		if err != nil || back != tc.in {
			t.Errorf("DecodeMetadataValue(%q) = %q, %v; want %q", got, back, err, tc.in)
		}
	}
	// Every byte value round-trips.
	var all strings.Builder
	for c := 0; c < 256; c++ {
		all.WriteByte(byte(c))
	}
	enc := EncodeMetadataValue(all.String())
	if back, err := DecodeMetadataValue(enc); err != nil || back != all.String() || !validMetaValue(enc) {
		t.Errorf("all bytes: %q -> %q, %v", enc, back, err)
	}
}

func FuzzEncodeMetadataValue(f *testing.F) {
	f.Add(" ünïcode name .hprof")
	f.Add("%%")
	f.Fuzz(func(t *testing.T, s string) {
		enc := EncodeMetadataValue(s)
		if !validMetaValue(enc) {
			t.Fatalf("%q -> %q: invalid", s, enc)
		}
		if back, err := DecodeMetadataValue(enc); err != nil || back != s {
			t.Fatalf("%q -> %q -> %q, %v", s, enc, back, err)
		}
	})
}
