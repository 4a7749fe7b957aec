// Package storage is where the uploader puts heap dumps: a small Bucket
// interface (Put, Stat, Get, Delete, URL) with an S3 backend (AWS S3 and
// S3-compatible stores through minio-go) and a filesystem backend (a NAS
// share or PersistentVolume), both opened from a destination URL:
//
//	d, _ := destination.Parse("s3://dumps/prod?region=eu-west-1")
//	b, err := storage.Open(d, storage.Options{CredentialsDir: os.Getenv(settings.EnvCredentialsDir)})
//	info, err := b.Put(ctx, "shop/web-7d9c5/20260102T030405Z-oom.hprof.gz", f, storage.PutOptions{...})
//
// Keys are relative to the destination's prefix ("/"-separated, no empty,
// "." or ".." segments; see ValidateKey), so no key can reach outside it.
// Put to an existing key replaces the object: dumpcatcher's keys are unique
// per dump, so this only happens when a Put is retried.
//
// # Failure atomicity
//
// When Put returns an error, nothing partial is visible under the key and an
// object that was there before is untouched: S3 single PUTs are atomic,
// multipart uploads are aborted (also when ctx is cancelled: the abort runs
// on a context detached from ctx, bounded to a minute), and files are
// written under a temporary name and renamed into place only when complete.
// The one exception is an error after the store committed the object (for
// instance the verifying HEAD request failed): the complete object may stay,
// and the retried Put replaces it. If the abort itself fails (the store is
// down), the incomplete upload stays until a bucket lifecycle rule
// AbortIncompleteMultipartUpload removes it; configure one.
//
// # Memory
//
// Put reads the stream in one pass and never holds more than PartsInFlight ×
// PartSize bytes of data: 2 × 16 MiB = 32 MiB by default, for all Puts of a
// Bucket together (a Put waits for a free buffer). Buffers are reused across
// parts and freed after 10 s without a Put. The test puts a 1 GiB stream and
// sees the heap grow by about 36 MiB. The filesystem backend copies through
// a 1 MiB buffer.
//
// # Verification
//
// While streaming, Put counts the bytes and computes their SHA-256 and the
// MD5 of every part (one pass over the data). Every S3 request that carries
// data sends a Content-MD5 header, so the store rejects a corrupted part. After
// the upload Put asks the store (HEAD) and requires:
//
//   - the size to equal the number of bytes read, and
//   - the ETag to equal the locally computed one: the hex MD5 of the object
//     for a single PUT (objects up to one part), or for a multipart upload
//     hex(MD5(MD5(part 1) ‖ … ‖ MD5(part N))) + "-N". AWS, MinIO, Ceph RGW,
//     Alibaba OSS and Huawei OBS all compute ETags this way.
//
// A mismatch removes the object and returns a *VerifyError. When the ETag
// cannot be an MD5 (the object is encrypted with SSE-KMS, DSSE-KMS or SSE-C,
// or the ETag does not look like an MD5), Put checks the size only, relies
// on the per-part Content-MD5 checks, logs it and says so in Info.Verified.
// Options.SkipETagCheck does the same for stores whose MD5-looking ETags are
// something else. The filesystem backend fsyncs the file and compares the
// size the file system reports.
//
// The SHA-256 of the sent bytes is stored under the metadata key "sha256".
// S3 metadata is fixed when an upload begins, so for single PUTs it is user
// metadata, and for multipart uploads it is the object tag "sha256", set
// right after verification (Stat merges it into Info.Metadata; it needs
// s3:PutObjectTagging, and a failure is reported in Info.Verified, not as an
// error). A caller that knows the SHA-256 up front passes it as
// PutOptions.Metadata["sha256"]: it is then stored as metadata for any size,
// and Put fails with a *VerifyError, leaving nothing, if the stream hashes to
// something else.
//
// # S3
//
// Requests are retried by minio-go (Options.MaxRetries attempts, 10 by
// default, with exponential backoff and full jitter from 200 ms up to 1 s
// apart) when the error is transient: network errors, 5xx, SlowDown and the
// like. Parts are uploaded from memory, so a retried part is sent again in
// full. Keys are limited to 10,000 parts: 156 GiB with the default part
// size. Credentials come from a mounted Secret (CredentialsFromDir, re-read
// when its files change) or the AWS default chain (DefaultCredentials:
// environment, shared file, web identity/IRSA, EKS Pod Identity, ECS, EC2
// instance role). Error strings name the object URL and the endpoint, never
// credentials.
//
// # Filesystem
//
// See Filesystem for the on-disk layout (<key> and <key>.meta.json).
//
// Every Bucket passes the conformance suite in package storagetest; package
// miniotest runs a real MinIO for the S3 tests.
package storage
