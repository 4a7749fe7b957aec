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
		{in: "file:///mnt/nas/dumps/", want: Destination{Scheme: "file", Prefix: "/mnt/nas/dumps"}},
		{in: "", wantErr: "empty"},
		{in: "gs://bucket", wantErr: `unsupported scheme "gs"`},
		{in: "s3://Bucket", wantErr: "invalid bucket name"},
		{in: "s3://ab", wantErr: "invalid bucket name"},
		{in: "s3://a..b", wantErr: "invalid bucket name"},
		{in: "s3://key:secret@bucket", wantErr: "credentials must not be part of the URL"},
		{in: "s3://bucket:9000", wantErr: "has a port"},
		{in: "s3://bucket/a/../b", wantErr: "invalid prefix"},
		{in: "s3://bucket?foo=1", wantErr: `unknown parameter "foo"`},
		{in: "s3://bucket?region=a&region=b", wantErr: "given 2 times"},
		{in: "s3://bucket?endpoint=minio:9000", wantErr: "invalid endpoint"},
		{in: "s3://bucket?path-style=yes", wantErr: "invalid path-style"},
		{in: "file://host/x", wantErr: "three slashes"},
		{in: "file:///", wantErr: "absolute directory"},
		{in: "file:///x?y=1", wantErr: "no parameters"},
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
