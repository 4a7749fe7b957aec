package storage

import (
	"net/url"
	"strings"
)

// EncodeMetadataValue turns any string, including names an app chose for
// its files (non-ASCII, control characters, leading or trailing spaces,
// bytes that are not UTF-8), into a valid metadata value (see PutOptions):
// every byte outside printable ASCII without the space (0x21 to 0x7e), and
// '%' itself, is written as %XX, the percent-encoding of RFC 3986 with
// upper-case hex digits. So a space becomes %20 and "ü" becomes %C3%BC,
// while a value made of letters, digits and punctuation other than '%'
// (java_pid1.hprof, deployment/web) is unchanged. DecodeMetadataValue
// reverses it exactly.
//
// Percent-encoding rather than RFC 2047 ("=?UTF-8?Q?...?=", which S3 and
// MinIO apply to headers they cannot store as they are): it is reversible
// for any bytes, not only UTF-8, readers can decode it with any URL
// library, and it leaves ordinary names readable.
func EncodeMetadataValue(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !metaSafe(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if metaSafe(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// metaSafe says that c stands for itself in an encoded metadata value.
func metaSafe(c byte) bool { return c > 0x20 && c < 0x7f && c != '%' }

// DecodeMetadataValue reverses EncodeMetadataValue. It fails only for a
// '%' that is not followed by two hex digits, which EncodeMetadataValue
// never writes.
func DecodeMetadataValue(v string) (string, error) {
	return url.PathUnescape(v)
}
