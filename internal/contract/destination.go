package contract

// Storage destination URLs (ParseDestination):
//
//	s3://bucket[/prefix][?endpoint=https://host:port&region=r&path-style=true]
//	file:///absolute/path
//
// The webhook validates pod annotations with it and the uploader opens its
// storage backend from it, so both accept exactly the same URLs.

import (
	"fmt"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Destination is a parsed storage URL.
type Destination struct {
	// Scheme is "s3" or "file".
	Scheme string
	// Bucket is the S3 bucket (s3 only).
	Bucket string
	// Prefix is the key prefix inside the bucket without leading or trailing
	// slash (s3), or the absolute directory (file).
	Prefix string
	// Endpoint is a custom S3 endpoint URL, e.g. https://minio.example:9000.
	Endpoint string
	// Region is the S3 region.
	Region string
	// PathStyle selects path-style bucket addressing (MinIO, Ceph).
	PathStyle bool
}

// bucketRE is the portable subset of S3 bucket names: 3-63 characters of
// lower-case letters, digits, dots and hyphens, starting and ending with a
// letter or digit.
var bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

var s3Params = map[string]bool{"endpoint": true, "region": true, "path-style": true}

// Parse parses and validates a storage URL. Errors say what is wrong and show
// the accepted form.
func ParseDestination(raw string) (Destination, error) {
	if strings.TrimSpace(raw) == "" {
		return Destination{}, fmt.Errorf("empty; want s3://bucket/prefix or file:///path")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Destination{}, fmt.Errorf("not a URL (%v); want s3://bucket/prefix or file:///path", err)
	}
	switch u.Scheme {
	case "s3":
		return parseS3(u)
	case "file":
		return parseFile(u)
	default:
		return Destination{}, fmt.Errorf("unsupported scheme %q; want s3://bucket/prefix or file:///path", u.Scheme)
	}
}

func parseS3(u *url.URL) (Destination, error) {
	if u.User != nil {
		return Destination{}, fmt.Errorf("credentials must not be part of the URL; put them in the credentials Secret")
	}
	if u.Port() != "" {
		return Destination{}, fmt.Errorf("bucket %q has a port; set the server with ?endpoint=https://host:port", u.Host)
	}
	if !bucketRE.MatchString(u.Host) || strings.Contains(u.Host, "..") {
		return Destination{}, fmt.Errorf("invalid bucket name %q: want 3-63 lower-case letters, digits, dots or hyphens", u.Host)
	}
	d := Destination{Scheme: "s3", Bucket: u.Host}
	prefix := strings.Trim(u.Path, "/")
	if prefix != "" {
		for _, seg := range strings.Split(prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return Destination{}, fmt.Errorf("invalid prefix %q: empty, . and .. segments are not allowed", u.Path)
			}
		}
	}
	d.Prefix = prefix
	q := u.Query()
	var unknown []string
	for k, v := range q {
		if !s3Params[k] {
			unknown = append(unknown, k)
			continue
		}
		if len(v) != 1 {
			return Destination{}, fmt.Errorf("parameter %q given %d times; give it once", k, len(v))
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return Destination{}, fmt.Errorf("unknown parameter %q; allowed: endpoint, region, path-style", unknown[0])
	}
	if ep := q.Get("endpoint"); ep != "" {
		eu, err := url.Parse(ep)
		if err != nil || (eu.Scheme != "http" && eu.Scheme != "https") || eu.Host == "" {
			return Destination{}, fmt.Errorf("invalid endpoint %q: want http(s)://host[:port]", ep)
		}
		d.Endpoint = ep
	}
	d.Region = q.Get("region")
	if ps := q.Get("path-style"); ps != "" {
		b, err := strconv.ParseBool(ps)
		if err != nil {
			return Destination{}, fmt.Errorf("invalid path-style %q: want true or false", ps)
		}
		d.PathStyle = b
	}
	return d, nil
}

func parseFile(u *url.URL) (Destination, error) {
	if u.Host != "" {
		return Destination{}, fmt.Errorf("file URL has host %q; want file:///absolute/path (three slashes)", u.Host)
	}
	if u.RawQuery != "" {
		return Destination{}, fmt.Errorf("file URLs take no parameters")
	}
	if !strings.HasPrefix(u.Path, "/") || path.Clean(u.Path) == "/" {
		return Destination{}, fmt.Errorf("file URL needs an absolute directory other than /, e.g. file:///mnt/dumps")
	}
	return Destination{Scheme: "file", Prefix: path.Clean(u.Path)}, nil
}
