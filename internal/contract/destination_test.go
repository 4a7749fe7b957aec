package contract

import (
	"strings"
	"testing"
)

func TestParseDestination(t *testing.T) {
	tests := []struct {
		in      string
		want    Destination
		wantErr string
	}{
		{in: "s3://dumps", want: Destination{Scheme: "s3", Bucket: "dumps"}},
		{in: "s3://dumps/team/a/", want: Destination{Scheme: "s3", Bucket: "dumps", Prefix: "team/a"}},
		{in: "s3://dumps/p?endpoint=http://minio.minio:9000&region=us-east-1&path-style=true",
			want: Destination{Scheme: "s3", Bucket: "dumps", Prefix: "p", Endpoint: "http://minio.minio:9000", Region: "us-east-1", PathStyle: true}},
		{in: "s3://obs-bucket.v2?endpoint=https://obs.cn-north-4.myhuaweicloud.com",
			want: Destination{Scheme: "s3", Bucket: "obs-bucket.v2", Endpoint: "https://obs.cn-north-4.myhuaweicloud.com"}},
		{in: "s3://dumps?endpoint=https://minio:9000/", want: Destination{Scheme: "s3", Bucket: "dumps", Endpoint: "https://minio:9000/"}},
		{in: "s3://dumps?endpoint=http://[::1]:9000", want: Destination{Scheme: "s3", Bucket: "dumps", Endpoint: "http://[::1]:9000"}},
		{in: "s3://dumps?endpoint=https://s3.eu-west-1.amazonaws.com", want: Destination{Scheme: "s3", Bucket: "dumps", Endpoint: "https://s3.eu-west-1.amazonaws.com"}},
		{in: "file:///mnt/nas/dumps/", want: Destination{Scheme: "file", Prefix: "/mnt/nas/dumps"}},
		{in: "", wantErr: "empty"},
		{in: "gs://bucket", wantErr: `unsupported scheme "gs"`},
		{in: "s3://Bucket", wantErr: "invalid bucket name"},
		{in: "s3://ab", wantErr: "invalid bucket name"},
		{in: "s3://a..b", wantErr: "invalid bucket name"},
		{in: "s3://a.-b", wantErr: "invalid bucket name"},
		{in: "s3://192.168.1.10", wantErr: "invalid bucket name"},
		{in: "s3:dumps", wantErr: "without //"},
		{in: "s3://key:secret@bucket", wantErr: "credentials must not be part of the URL"},
		{in: "s3://bucket:9000", wantErr: "has a port"},
		{in: "s3://bucket:", wantErr: "has a port"},
		{in: "s3://bucket/a/../b", wantErr: "invalid prefix"},
		{in: "s3://bucket/a%0Ab", wantErr: "invalid prefix"},
		{in: "s3://bucket/a#b", wantErr: "fragment"},
		{in: "s3://bucket?foo=1", wantErr: `unknown parameter "foo"`},
		{in: "s3://bucket?region=a&region=b", wantErr: "given 2 times"},
		{in: "s3://bucket?region=a;b", wantErr: "malformed query"},
		{in: "s3://bucket?region=eu%20west", wantErr: "invalid region"},
		{in: "s3://bucket?endpoint=minio:9000", wantErr: "scheme must be http or https"},
		{in: "s3://bucket?endpoint=http://", wantErr: "no host"},
		{in: "s3://bucket?endpoint=http://minio:9000/api", wantErr: "a path is not allowed"},
		{in: "s3://bucket?endpoint=http://minio:9000%3Fa%3Db", wantErr: "a query is not allowed"},
		{in: "s3://bucket?endpoint=http://minio:9000%23x", wantErr: "a fragment is not allowed"},
		{in: "s3://bucket?endpoint=http://user:pass@minio:9000", wantErr: "credentials must not be part of the URL"},
		{in: "s3://bucket?endpoint=http://-minio:9000", wantErr: "not a domain name or IP address"},
		{in: "s3://bucket?endpoint=https://bucket.s3.amazonaws.com", wantErr: "AWS S3 endpoint"},
		{in: "s3://bucket?endpoint=https://x.storage.googleapis.com", wantErr: "Google Cloud Storage endpoint"},
		{in: "s3://bucket?path-style=yes", wantErr: "invalid path-style"},
		{in: "file://host/x", wantErr: "three slashes"},
		{in: "file://user@/x", wantErr: "credentials must not be part of the URL"},
		{in: "file:///", wantErr: "absolute directory"},
		{in: "file:///x?y=1", wantErr: "no parameters"},
		{in: "file:///x#y", wantErr: "fragment"},
	}
	for _, tt := range tests {
		got, err := ParseDestination(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseDestination(%q) error = %v, want it to contain %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseDestination(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseDestination(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

// TestParseDestinationKeepsSecrets: a URL that carries a secret is refused
// with an error that does not repeat it (errors end up in admission denials,
// the webhook's log and the events of ReplicaSets).
func TestParseDestinationKeepsSecrets(t *testing.T) {
	for _, raw := range []string{
		"s3://AKIAEXAMPLE:wJalrSECRET@dumps/p",
		"s3://AKIAEXAMPLE:wJal/rSECRET@dumps/p", // a slash in the key: url.Parse fails on a "port"
		"s3://AKIAEXAMPLE:wJalrSECRET@dumps:9000/p",
		"s3://dumps/p?endpoint=https://AKIAEXAMPLE:wJalrSECRET@minio:9000",
		"s3://dumps/p?endpoint=AKIAEXAMPLE:wJalrSECRET@minio:9000",
		"s3://dumps/p?endpoint=https://minio:9000/wJalrSECRET",
		"s3://dumps/p?endpoint=https://minio:9000?token=wJalrSECRET",
		"s3://dumps/p?endpoint=https://minio%zz:9000?token=wJalrSECRET",
		"s3://dumps/p?secret-key=wJalrSECRET",
		"s3://dumps/p?region=wJalrSECRET!",
		"s3://dumps/p?path-style=true&region=a&region=wJalrSECRET",
		"s3://dumps wJalrSECRET/p",
		"s3://dumps/p%zzwJalrSECRET",
		"file://AKIAEXAMPLE:wJalrSECRET@/mnt/dumps",
		"file:///mnt/dumps?token=wJalrSECRET",
		"wJalrSECRET",
	} {
		_, err := ParseDestination(raw)
		if err == nil {
			t.Errorf("ParseDestination(%q) accepted it", raw)
			continue
		}
		if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "AKIAEXAMPLE") {
			t.Errorf("ParseDestination(%q) error repeats the secret: %v", raw, err)
		}
	}
}
