// Package bench holds the end-to-end benchmarks of the uploader sidecar: the
// real dumpcatcher binary (`dumpcatcher upload`, built by the benchmark)
// against a real MinIO on 127.0.0.1, compared in the same run with MinIO's
// own client `mc` (`mc cp`, and `gzip -1 | mc pipe` for compressed dumps),
// plus the memory and CPU of the uploader process read from /proc.
//
// The package has no code of its own; everything is in the _test.go files:
//
//	KUBEBUILDER_ASSETS=$(bash test/tools/install.sh minio mc) \
//	  go test ./test/bench -run '^$' -bench . -benchtime 1x -timeout 30m
//
// minio and mc come from $DUMPCATCHER_TOOLS_BIN or $KUBEBUILDER_ASSETS;
// java, javac and jcmd (for a real heap dump) and gzip from PATH. Without
// them the benchmarks skip, unless DUMPCATCHER_REQUIRE_REAL is set. The
// generated heap dump (~1 GiB) is cached in
// $(go env GOMODCACHE)/../dumpcatcher-tools/bench (or $DUMPCATCHER_TOOLS/bench).
//
// Other settings: DUMPCATCHER_BENCH_REPS (repetitions of each comparison,
// default 3), DUMPCATCHER_BENCH_HPROF (use this heap dump instead of
// generating one), DUMPCATCHER_BENCH_UPLOADER_ENV (space-separated NAME=value
// pairs added to the uploader's environment only, e.g. "GOMEMLIMIT=40MiB
// GOGC=50", to try runtime settings without a rebuild), DUMPCATCHER_BENCH_BINARY
// (measure this dumpcatcher binary instead of building ./cmd/dumpcatcher,
// e.g. to compare a change with the committed code), DUMPCATCHER_BENCH_LOGDIR
// (write every uploader's whole output into this directory, e.g. with
// DUMPCATCHER_BENCH_UPLOADER_ENV=GODEBUG=gctrace=1).
package bench
