package storage

// ValidateMetadata checks PutOptions.Metadata as every backend's Put does
// (ErrInvalidMetadata, wrapped, when it is not acceptable) and returns a
// copy without the reserved "sha256" key, plus the SHA-256 the caller
// expects the stream to hash to (or ""). It is for backends outside this
// package, such as the in-memory one of tests (sidecar/storage/memory).
func ValidateMetadata(md map[string]string) (stored map[string]string, expectedSHA256 string, err error) {
	return checkMetadata(md)
}
