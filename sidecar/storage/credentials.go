package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"
)

// Names of the files CredentialsFromDir reads. For each value the first
// name that exists wins.
const (
	FileAccessKeyID        = "accessKeyID"
	FileSecretAccessKey    = "secretAccessKey"
	FileSessionToken       = "sessionToken"
	FileAWSAccessKeyID     = "AWS_ACCESS_KEY_ID"
	FileAWSSecretAccessKey = "AWS_SECRET_ACCESS_KEY"
	FileAWSSessionToken    = "AWS_SESSION_TOKEN"
)

// credentialFiles lists the candidate names of the access key, the secret
// key and the session token.
func credentialFiles() [3][]string {
	return [3][]string{
		{FileAccessKeyID, FileAWSAccessKeyID},
		{FileSecretAccessKey, FileAWSSecretAccessKey},
		{FileSessionToken, FileAWSSessionToken},
	}
}

// CredentialsFromDir returns credentials read from files in dir, the mount
// of a Kubernetes Secret: accessKeyID and secretAccessKey (or the AWS-style
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), and optionally sessionToken
// (AWS_SESSION_TOKEN). Surrounding white space is trimmed.
//
// The files are stat'ed before every request and read again when any of
// them changed (another file, size or modification time), which covers the
// kubelet's atomic symlink swap when the Secret is updated: rotated keys are
// used without a restart. Errors name the directory and files, never their
// contents.
func CredentialsFromDir(dir string) *credentials.Credentials {
	return credentials.New(&dirProvider{dir: dir})
}

type dirProvider struct {
	dir string

	mu    sync.Mutex
	stamp []os.FileInfo // of the files last read; nil: never read
}

func (p *dirProvider) fingerprint() []os.FileInfo {
	var fis []os.FileInfo
	for _, names := range credentialFiles() {
		for _, n := range names {
			fi, err := os.Stat(filepath.Join(p.dir, n))
			if err == nil {
				fis = append(fis, fi)
			} else {
				fis = append(fis, nil)
			}
		}
	}
	return fis
}

func sameStamp(a, b []os.FileInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		switch {
		case a[i] == nil && b[i] == nil:
		case a[i] == nil || b[i] == nil:
			return false
		case !os.SameFile(a[i], b[i]) || a[i].Size() != b[i].Size() || !a[i].ModTime().Equal(b[i].ModTime()):
			return false
		}
	}
	return true
}

// IsExpired reports whether the files changed since they were last read.
func (p *dirProvider) IsExpired() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stamp == nil || !sameStamp(p.stamp, p.fingerprint())
}

// Retrieve reads the files.
func (p *dirProvider) Retrieve() (credentials.Value, error) {
	return p.RetrieveWithCredContext(nil)
}

// RetrieveWithCredContext reads the files.
func (p *dirProvider) RetrieveWithCredContext(*credentials.CredContext) (credentials.Value, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	stamp := p.fingerprint()
	files := credentialFiles()
	access, err := p.read(files[0], true)
	if err != nil {
		return credentials.Value{}, err
	}
	secret, err := p.read(files[1], true)
	if err != nil {
		return credentials.Value{}, err
	}
	token, err := p.read(files[2], false)
	if err != nil {
		return credentials.Value{}, err
	}
	p.stamp = stamp
	return credentials.Value{
		AccessKeyID:     access,
		SecretAccessKey: secret,
		SessionToken:    token,
		SignerType:      credentials.SignatureV4,
	}, nil
}

// read returns the trimmed contents of the first of names that exists.
// Errors carry no file contents.
func (p *dirProvider) read(names []string, required bool) (string, error) {
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(p.dir, n))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			// The *PathError names the file and the errno, not the content.
			return "", fmt.Errorf("credentials directory %s: %v", p.dir, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("credentials directory %s: %s is empty", p.dir, n)
		}
		return v, nil
	}
	if required {
		return "", fmt.Errorf("credentials directory %s: neither %s exists", p.dir, strings.Join(names, " nor "))
	}
	return "", nil
}

// DefaultCredentials returns the AWS default chain, tried in this order
// until one yields keys:
//
//  1. environment: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN
//     (also AWS_ACCESS_KEY/AWS_SECRET_KEY);
//  2. the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or
//     ~/.aws/credentials, profile AWS_PROFILE);
//  3. minio-go's IAM provider: web identity / IRSA (AWS_WEB_IDENTITY_TOKEN_FILE
//     and AWS_ROLE_ARN, STS in AWS_REGION), EKS Pod Identity and ECS
//     container credentials (AWS_CONTAINER_CREDENTIALS_*), then the EC2
//     instance role through IMDSv2.
//
// Unlike minio-go's Chain it does not fall back to anonymous requests: when
// no source yields keys every request fails with an error that says so.
func DefaultCredentials() *credentials.Credentials {
	return credentials.New(&chain{providers: []namedProvider{
		{"environment (AWS_ACCESS_KEY_ID)", &credentials.EnvAWS{}},
		{"shared credentials file", &credentials.FileAWSCredentials{}},
		{"IAM (web identity, EKS pod identity, ECS, EC2 instance role)", &credentials.IAM{}},
	}})
}

type namedProvider struct {
	name string
	credentials.Provider
}

type chain struct {
	providers []namedProvider

	mu   sync.Mutex
	curr credentials.Provider
	// failedAt rate-limits retries of a chain that found nothing, because
	// the IMDS probe can take seconds off AWS.
	failedAt time.Time
	failErr  error
}

func (c *chain) Retrieve() (credentials.Value, error) { return c.RetrieveWithCredContext(nil) }

func (c *chain) RetrieveWithCredContext(cc *credentials.CredContext) (credentials.Value, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failErr != nil && time.Since(c.failedAt) < 10*time.Second {
		return credentials.Value{}, c.failErr
	}
	var errs []string
	for _, p := range c.providers {
		v, err := p.RetrieveWithCredContext(cc)
		if err == nil && v.AccessKeyID != "" && v.SecretAccessKey != "" {
			c.curr, c.failErr = p.Provider, nil
			return v, nil
		}
		if err != nil {
			// minio-go's provider errors describe sources and HTTP
			// failures, not secrets.
			errs = append(errs, p.name+": "+err.Error())
		} else {
			errs = append(errs, p.name+": no keys")
		}
	}
	c.curr = nil
	c.failedAt = time.Now()
	c.failErr = fmt.Errorf("no S3 credentials: set %s (a mounted Secret) or provide AWS credentials (%s)",
		contract.EnvCredentialsDir, strings.Join(errs, "; "))
	return credentials.Value{}, c.failErr
}

func (c *chain) IsExpired() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.curr == nil || c.curr.IsExpired()
}
