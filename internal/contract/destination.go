package contract

// Storage destination URLs (ParseDestination):
//
//	s3://bucket[/prefix][?endpoint=https://host:port&region=r&path-style=true]
//	file:///absolute/path
//
// The webhook validates pod annotations and its configuration with it and the
// uploader opens its storage backend from what it returns, so a URL the
// webhook injects is one the uploader starts with (sidecar/storage's
// destination_agree_test.go holds both sides to that).
//
// Destination URLs end up in denials, logs, events, the status annotation and
// the sidecar's environment, so no error of ParseDestination repeats the URL,
// its userinfo, the endpoint parameter or a parameter value that could hold a
// secret; and credentials in the URL (user:password@, also inside the
// endpoint parameter) are refused rather than silently dropped.

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/minio/minio-go/v7/pkg/s3utils"
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

// regionRE admits the region names of AWS and the S3-compatible stores
// (us-east-1, cn-north-4, MinIO's free-form site regions).
var regionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

var s3Params = map[string]bool{"endpoint": true, "region": true, "path-style": true}

const wantForm = "want s3://bucket/prefix or file:///path"

// errCredentials is the error for user:password@ in a URL.
var errCredentials = errors.New("credentials must not be part of the URL (user:password@); put them in the credentials Secret")

// ParseDestination parses and validates a storage URL. Errors say what is
// wrong and show the accepted form, never the URL itself.
func ParseDestination(raw string) (Destination, error) {
	if strings.TrimSpace(raw) == "" {
		return Destination{}, fmt.Errorf("empty; %s", wantForm)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse errors quote the whole URL, and some (a bad port) the
		// text after a colon, which may be a secret key: say only the kind.
		return Destination{}, fmt.Errorf("not a valid URL (%s); %s", urlErrorKind(err), wantForm)
	}
	if u.User != nil {
		return Destination{}, errCredentials
	}
	if u.Fragment != "" || u.RawFragment != "" || strings.Contains(raw, "#") {
		return Destination{}, fmt.Errorf("a fragment (#...) is not allowed; %s", wantForm)
	}
	switch u.Scheme {
	case "s3":
		return parseS3(u)
	case "file":
		return parseFile(u)
	default:
		return Destination{}, fmt.Errorf("unsupported scheme %q; %s", u.Scheme, wantForm)
	}
}

// urlErrorKind describes a url.Parse error without quoting any of the input.
func urlErrorKind(err error) string {
	var esc url.EscapeError
	var host url.InvalidHostError
	switch msg := err.Error(); {
	case errors.As(err, &esc):
		return "a malformed %-escape"
	case errors.As(err, &host):
		return "an invalid character in the host"
	case strings.Contains(msg, "invalid port"):
		return "an invalid port after the host (a password or key with a slash in user:password@?)"
	case strings.Contains(msg, "control character"):
		return "a control character"
	case strings.Contains(msg, "missing protocol scheme"):
		return "no scheme"
	case strings.Contains(msg, "userinfo"):
		return "invalid user information"
	}
	return "malformed"
}

func parseS3(u *url.URL) (Destination, error) {
	if u.Opaque != "" {
		return Destination{}, fmt.Errorf("s3 URL without //; %s", wantForm)
	}
	if u.Port() != "" || strings.HasSuffix(u.Host, ":") {
		return Destination{}, fmt.Errorf("bucket %q has a port; set the server with ?endpoint=https://host:port", u.Hostname())
	}
	if err := s3utils.CheckValidBucketNameStrict(u.Host); err != nil {
		return Destination{}, fmt.Errorf("invalid bucket name %q: want 3-63 lower-case letters, digits, dots or hyphens, starting and ending with a letter or digit, not an IP address, without .. .- -.", u.Host)
	}
	d := Destination{Scheme: "s3", Bucket: u.Host}
	prefix := strings.Trim(u.Path, "/")
	if prefix != "" {
		if err := checkPrefix(prefix); err != nil {
			return Destination{}, fmt.Errorf("invalid prefix %q: %v", u.Path, err)
		}
	}
	d.Prefix = prefix
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Destination{}, fmt.Errorf("malformed query (use & between parameters and %%-escape special characters); allowed parameters: endpoint, region, path-style")
	}
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
		if err := checkEndpoint(ep); err != nil {
			return Destination{}, fmt.Errorf("invalid endpoint: %v", err)
		}
		d.Endpoint = ep
	}
	if r := q.Get("region"); r != "" {
		if !regionRE.MatchString(r) {
			return Destination{}, fmt.Errorf("invalid region: want letters, digits, '.', '_' or '-' (at most 64), such as eu-west-1")
		}
		d.Region = r
	}
	if ps := q.Get("path-style"); ps != "" {
		b, err := strconv.ParseBool(ps)
		if err != nil {
			return Destination{}, fmt.Errorf("invalid path-style %q: want true or false", ps)
		}
		d.PathStyle = b
	}
	return d, nil
}

// checkPrefix admits key prefixes under which every key the uploader writes
// is valid: "/"-separated segments, none empty, "." or "..", of UTF-8
// without control characters or backslashes.
func checkPrefix(prefix string) error {
	switch {
	case !utf8.ValidString(prefix):
		return errors.New("not UTF-8")
	case strings.ContainsFunc(prefix, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }):
		return errors.New("control characters and backslashes are not allowed")
	case len(prefix) > 512:
		return errors.New("longer than 512 bytes")
	}
	for _, seg := range strings.Split(prefix, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return errors.New("empty, . and .. segments are not allowed")
		}
	}
	return nil
}

// checkEndpoint admits what the uploader's S3 client (minio-go) takes as an
// endpoint: http(s)://host[:port], where host is an IP address or a domain
// name, with no credentials, path, query or fragment. Errors show at most
// the host name.
func checkEndpoint(ep string) error {
	const want = "want http(s)://host[:port]"
	eu, err := url.Parse(ep)
	switch {
	case err != nil:
		return fmt.Errorf("not a URL (%s); %s", urlErrorKind(err), want)
	case eu.User != nil || strings.Contains(ep, "@"):
		return errCredentials
	case eu.Scheme != "http" && eu.Scheme != "https":
		return fmt.Errorf("the scheme must be http or https; %s", want)
	case eu.Opaque != "" || eu.Host == "":
		return fmt.Errorf("no host; %s", want)
	case eu.Path != "" && eu.Path != "/" || eu.RawPath != "":
		return fmt.Errorf("a path is not allowed (the bucket and prefix go in the s3:// URL); %s", want)
	case eu.RawQuery != "" || eu.ForceQuery:
		return fmt.Errorf("a query is not allowed; %s", want)
	case eu.Fragment != "" || eu.RawFragment != "" || strings.Contains(ep, "#"):
		return fmt.Errorf("a fragment is not allowed; %s", want)
	}
	// minio-go parses scheme://host again and checks the host
	// (isValidEndpointURL); these are its rules.
	again, err := url.Parse(eu.Scheme + "://" + eu.Host)
	if err != nil || again.Path != "" {
		return fmt.Errorf("host %q is not a domain name or IP address; %s", eu.Hostname(), want)
	}
	host := again.Hostname()
	if !s3utils.IsValidIP(host) && !s3utils.IsValidDomain(host) {
		return fmt.Errorf("host %q is not a domain name or IP address; %s", host, want)
	}
	if strings.Contains(host, ".s3.amazonaws.com") && !s3utils.IsAmazonEndpoint(*again) {
		return fmt.Errorf("host %q: the AWS S3 endpoint is s3.amazonaws.com or s3.<region>.amazonaws.com", host)
	}
	if strings.Contains(host, ".googleapis.com") && !s3utils.IsGoogleEndpoint(*again) {
		return fmt.Errorf("host %q: the Google Cloud Storage endpoint is storage.googleapis.com", host)
	}
	if strings.Contains(host, "s3-outposts") && !s3utils.IsAmazonOutpostsEndpoint(*again) {
		return fmt.Errorf("host %q: S3 on Outposts endpoints are <prefix>.s3-outposts.<region>.amazonaws.com", host)
	}
	return nil
}

func parseFile(u *url.URL) (Destination, error) {
	if u.Host != "" {
		return Destination{}, fmt.Errorf("file URL has host %q; want file:///absolute/path (three slashes)", u.Hostname())
	}
	if u.RawQuery != "" || u.ForceQuery {
		return Destination{}, fmt.Errorf("file URLs take no parameters")
	}
	if !strings.HasPrefix(u.Path, "/") || path.Clean(u.Path) == "/" {
		return Destination{}, fmt.Errorf("file URL needs an absolute directory other than /, e.g. file:///mnt/dumps")
	}
	return Destination{Scheme: "file", Prefix: path.Clean(u.Path)}, nil
}
