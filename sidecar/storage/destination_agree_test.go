package storage_test

import (
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
)

// The webhook injects a destination only when contract.ParseDestination
// accepts it, and the uploader then opens its backend with storage.Open. A
// URL the first accepts and the second refuses makes the sidecar crash-loop
// at start, so these tests hold the two to one set of rules: everything
// ParseDestination accepts opens (without connecting), and everything Open
// refuses ParseDestination refuses too. ParseDestination may refuse more
// (what Open cannot see, or what S3 would refuse only at the first upload);
// each such case below says why.

// agreeCases: {dir} stands for an existing directory.
var agreeCases = []struct {
	url string
	ok  bool
	// stricter says why ParseDestination refuses a URL that Open, given its
	// parts as they are, would take.
	stricter string
}{
	{url: "s3://dumps", ok: true},
	{url: "s3://dumps/team/a/", ok: true},
	{url: "s3://dumps/p?endpoint=http://minio.minio.svc:9000&region=us-east-1&path-style=true", ok: true},
	{url: "s3://dumps?endpoint=https://minio:9000/", ok: true},
	{url: "s3://dumps?endpoint=http://10.0.0.7:9000", ok: true},
	{url: "s3://dumps?endpoint=http://[fd00::7]:9000", ok: true},
	{url: "s3://dumps?endpoint=https://s3.eu-west-1.amazonaws.com&region=eu-west-1", ok: true},
	{url: "s3://dumps?endpoint=https://storage.googleapis.com", ok: true},
	{url: "s3://obs-bucket.v2?endpoint=https://obs.cn-north-4.myhuaweicloud.com", ok: true},
	{url: "file://{dir}", ok: true},
	{url: "file://{dir}/", ok: true},

	// Refused by both.
	{url: "gs://dumps"},
	{url: "s3://dumps?endpoint=minio:9000"},
	{url: "s3://dumps?endpoint=ftp://minio:9000"},
	{url: "s3://dumps?endpoint=http://"},
	{url: "s3://dumps?endpoint=http://minio:9000/api"},
	{url: "s3://dumps?endpoint=http://minio:9000/bucket/prefix"},
	{url: "s3://dumps?endpoint=http://minio:9000%3Fa%3Db"},
	{url: "s3://dumps?endpoint=http://-minio:9000"},
	{url: "s3://dumps?endpoint=http://minio_:9000"},
	{url: "s3://dumps?endpoint=https://dumps.s3.amazonaws.com"},
	{url: "s3://dumps?endpoint=https://x.storage.googleapis.com"},
	{url: "s3://dumps?endpoint=https://x.s3-outposts.example"},

	// Refused by ParseDestination only.
	{url: "s3://key:secret@dumps", stricter: "credentials in the URL: the uploader would drop them silently"},
	{url: "s3://dumps?endpoint=http://key:secret@minio:9000", stricter: "credentials in the endpoint: the uploader would drop them silently"},
	{url: "s3://dumps?endpoint=http://minio:9000%23frag", stricter: "a fragment in the endpoint means a typo; the uploader would ignore it"},
	{url: "s3://dumps/p#frag", stricter: "a fragment means a typo; the uploader would ignore it"},
	{url: "s3://Dumps", stricter: "S3 refuses the bucket name at the first upload"},
	{url: "s3://a.-b", stricter: "S3 refuses the bucket name at the first upload"},
	{url: "s3://10.0.0.1", stricter: "S3 refuses the bucket name at the first upload"},
	{url: "s3://dumps/a/../b", stricter: "a prefix with .. segments"},
	{url: "s3://dumps/a%0Ab", stricter: "every key under a prefix with a control character is refused at upload"},
	{url: "s3://dumps?foo=1", stricter: "unknown parameters are typos"},
	{url: "s3://dumps?region=a&region=b", stricter: "a parameter given twice is ambiguous"},
	{url: "s3://dumps?region=eu%20west", stricter: "not a region name"},
	{url: "s3://dumps?path-style=yes", stricter: "not a boolean"},
	{url: "s3://dumps:9000", stricter: "a port on the bucket means the endpoint was meant"},
}

// lenient takes a URL's parts as they are, the way a validator that checks
// nothing would hand them to the uploader's backend.
func lenient(raw string) (contract.Destination, bool) {
	u, err := url.Parse(raw)
	if err != nil {
		return contract.Destination{}, false
	}
	q := u.Query()
	d := contract.Destination{Scheme: u.Scheme, Bucket: u.Host, Prefix: strings.Trim(u.Path, "/"),
		Endpoint: q.Get("endpoint"), Region: q.Get("region")}
	d.PathStyle, _ = strconv.ParseBool(q.Get("path-style"))
	if u.Scheme == "file" {
		d.Prefix = filepath.Clean(u.Path)
	}
	return d, true
}

func TestDestinationAgreement(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range agreeCases {
		raw := strings.ReplaceAll(tc.url, "{dir}", dir)
		d, err := contract.ParseDestination(raw)
		if err == nil {
			if _, err := storage.Open(d, storage.Options{}); err != nil {
				t.Errorf("ParseDestination accepts %q but storage.Open refuses it: %v", raw, err)
			}
		}
		if (err == nil) != tc.ok {
			t.Errorf("ParseDestination(%q) = %v, want ok=%v", raw, err, tc.ok)
			continue
		}
		if tc.ok {
			continue
		}
		ld, parsed := lenient(raw)
		if !parsed {
			continue
		}
		_, err = storage.Open(ld, storage.Options{})
		switch {
		case err == nil && tc.stricter == "":
			t.Errorf("%q: storage.Open takes it but ParseDestination refuses it; say why in stricter or make them agree", raw)
		case err != nil && tc.stricter != "":
			t.Errorf("%q: both refuse it (%v); drop stricter", raw, err)
		}
	}
}

// FuzzDestinationAgreement: whatever ParseDestination accepts, storage.Open
// takes, both as parsed and (s3) as its parts taken as they are; so whatever
// storage.Open refuses, ParseDestination refuses.
func FuzzDestinationAgreement(f *testing.F) {
	for _, tc := range agreeCases {
		f.Add(strings.ReplaceAll(tc.url, "{dir}", "/x"))
	}
	f.Fuzz(func(t *testing.T, raw string) {
		d, err := contract.ParseDestination(raw)
		if err != nil {
			return
		}
		if d.Scheme == "file" {
			// Open checks only that the directory exists: make it.
			root := t.TempDir()
			if err := os.MkdirAll(filepath.Join(root, d.Prefix), 0o700); err != nil {
				t.Skip(err)
			}
			d.Prefix = filepath.Join(root, d.Prefix)
		}
		if _, err := storage.Open(d, storage.Options{}); err != nil {
			t.Fatalf("ParseDestination accepts %q but storage.Open refuses it: %v", raw, err)
		}
		// The other direction, stated the other way round: an accepted URL's
		// parts taken as they are open too.
		if ld, ok := lenient(raw); ok && ld.Scheme == "s3" {
			if _, err := storage.Open(ld, storage.Options{}); err != nil {
				t.Fatalf("ParseDestination accepts %q but storage.Open refuses its parts taken as they are: %v", raw, err)
			}
		}
	})
}
