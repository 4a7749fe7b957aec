package plugin

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/dumpcatcher/dumpcatcher/plugin/internal/apierr"
	"github.com/dumpcatcher/dumpcatcher/plugin/internal/decompress"
	"github.com/dumpcatcher/dumpcatcher/plugin/internal/dumpobj"
	"github.com/dumpcatcher/dumpcatcher/plugin/internal/fetch"
	"github.com/dumpcatcher/dumpcatcher/plugin/internal/progress"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"
)

// downloadOpts are the flags of download (and of dump --download).
type downloadOpts struct {
	output     string
	decompress bool
	chunk      string
	quiet      bool
	overwrite  bool
}

// DefaultChunk is the size of one range request: at 10 MiB/s it takes
// about 6 s, far from the kube-apiserver's 60 s cut; slower links shrink it
// (see fetch.Options.Target).
const DefaultChunk = "64Mi"

// chunkTarget is the time one range request should take at most.
const chunkTarget = 20 * time.Second

// requestTimeout cuts a range request that hangs (the kube-apiserver ends
// its own after 60 s); the download goes on from the last byte received.
const requestTimeout = 90 * time.Second

func (o *downloadOpts) addFlags(cmd *cobra.Command, outputFlag bool) {
	fl := cmd.Flags()
	if outputFlag {
		fl.StringVarP(&o.output, "output", "o", "", "the file to write (default: the dump's file name in the current directory; - for stdout)")
	}
	fl.BoolVar(&o.decompress, "decompress", false, "undo the dump's gzip/zstd encoding locally (the checksum is of the stored bytes and is checked first)")
	fl.StringVar(&o.chunk, "chunk-size", DefaultChunk, "the largest byte range asked in one request (each request must finish within the kube-apiserver's 60 s)")
	fl.BoolVarP(&o.quiet, "quiet", "q", false, "no progress output")
	fl.BoolVar(&o.overwrite, "overwrite", false, "replace an existing output file")
}

func (a *app) downloadCmd() *cobra.Command {
	var o downloadOpts
	cmd := &cobra.Command{
		Use:   "download NAME",
		Short: "Download a dump (in resumable byte ranges; the SHA-256 is verified)",
		Example: `  kubectl dumpcatcher download web-1-app-20261129t100000z-oom-k3j5x7a2bq -n shop
  kubectl dumpcatcher download web-1-app-20261129t100000z-oom-k3j5x7a2bq -n shop -o web.hprof --decompress
  kubectl dumpcatcher download web-1-app-20261129t100000z-oom-k3j5x7a2bq -n shop -o - | zstd -d > web.hprof`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, err := a.namespace()
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			_, d, err := c.get(cmd.Context(), ns, args[0])
			if err != nil {
				return err
			}
			return a.download(cmd.Context(), c, d, o)
		},
	}
	o.addFlags(cmd, true)
	return cmd
}

func (a *app) download(ctx context.Context, c *client, d dumpobj.Dump, o downloadOpts) error {
	q, err := resource.ParseQuantity(o.chunk)
	if err != nil || q.Value() <= 0 {
		return fmt.Errorf("--chunk-size %q is not a positive size such as 64Mi", o.chunk)
	}
	size := int64(-1)
	if d.Size > 0 {
		size = d.Size
	}
	f := fetch.HTTP{Client: c.http, URL: c.downloadURL(d.Namespace, d.Name), Name: d.Name}
	opts := fetch.Options{Size: size, Chunk: q.Value(), Target: chunkTarget, RequestTimeout: requestTimeout, Now: a.deps.now}
	var bar *progress.Bar
	if !o.quiet {
		bar = &progress.Bar{W: a.streams.ErrOut, TTY: a.deps.isTerminal(a.streams.ErrOut), Label: d.Name, Now: a.deps.now}
		opts.Progress = bar.Update
	}
	explain := func(err error) error {
		return c.explain(err, apierr.Request{Verb: "get", Subresource: "download", Namespace: d.Namespace, Name: d.Name})
	}
	enc := d.Encoding
	if !o.decompress {
		enc = decompress.None
	}
	if o.output == "-" {
		return a.downloadStdout(ctx, f, opts, d, enc, bar, explain)
	}
	return a.downloadFile(ctx, f, opts, d, enc, o, bar, explain)
}

// downloadStdout streams the (decompressed) bytes to stdout; the checksum
// can only be checked at the end: a mismatch is an error (exit code 1)
// after the bytes are written.
func (a *app) downloadStdout(ctx context.Context, f fetch.Fetcher, opts fetch.Options, d dumpobj.Dump, enc string, bar *progress.Bar, explain func(error) error) error {
	h := sha256.New()
	opts.Hash = h
	opts.Out = a.streams.Out
	var res fetch.Result
	var err error
	if enc == decompress.None || enc == "" {
		res, err = fetch.Download(ctx, f, opts)
	} else {
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			_, derr := decompress.Copy(a.streams.Out, pr, enc)
			pr.CloseWithError(derr)
			done <- derr
		}()
		opts.Out = pw
		res, err = fetch.Download(ctx, f, opts)
		pw.CloseWithError(err)
		if derr := <-done; err == nil && derr != nil {
			err = derr
		}
	}
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		return explain(err)
	}
	return a.verified(h.Sum(nil), d, res, "stdout")
}

// verified checks the checksum and says so on stderr.
func (a *app) verified(sum []byte, d dumpobj.Dump, res fetch.Result, where string) error {
	err := fetch.Verify(sum, d.SHA256, res.SHA256)
	if errors.Is(err, fetch.ErrNoChecksum) {
		fmt.Fprintf(a.streams.ErrOut, "warning: %v\n", err)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(a.streams.ErrOut, "%s: %d bytes to %s, SHA-256 verified\n", d.Name, res.Total, where)
	return nil
}

// downloadFile downloads into FILE.part (resuming it when present), checks
// the checksum, then renames it to FILE (or decompresses it into FILE).
func (a *app) downloadFile(ctx context.Context, fe fetch.Fetcher, opts fetch.Options, d dumpobj.Dump, enc string, o downloadOpts, bar *progress.Bar, explain func(error) error) error {
	final := o.output
	if final == "" {
		final = d.FileName()
		if enc != decompress.None {
			final = decompress.TrimSuffix(final, enc)
		}
	}
	if _, err := os.Lstat(final); err == nil && !o.overwrite {
		return fmt.Errorf("%s exists: remove it, choose another file with -o, or pass --overwrite", final)
	}
	part := final + ".part"
	// 0600: a heap dump holds the app's secrets.
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file: remove it", part)
	}
	offset := fi.Size()
	h, err := fetch.HashFile(f, offset)
	if err != nil {
		return fmt.Errorf("reading the partial download %s: %w", part, err)
	}
	if offset > 0 {
		fmt.Fprintf(a.streams.ErrOut, "resuming %s at byte %d (%s)\n", d.Name, offset, part)
	}
	opts.Offset, opts.Out, opts.Hash = offset, f, h
	res, err := fetch.Download(ctx, fe, opts)
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		return fmt.Errorf("%w; the bytes so far are in %s: run the same command again to resume", explain(err), part)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := fetch.Verify(h.Sum(nil), d.SHA256, res.SHA256); err != nil && !errors.Is(err, fetch.ErrNoChecksum) {
		os.Remove(part)
		return fmt.Errorf("%w (%s removed)", err, part)
	}
	if enc == decompress.None || enc == "" {
		if err := os.Rename(part, final); err != nil {
			return err
		}
	} else if err := decompressFile(part, final, enc); err != nil {
		return fmt.Errorf("%w; the stored (compressed) bytes are in %s", err, part)
	}
	return a.verified(h.Sum(nil), d, res, final)
}

// decompressFile writes the decompressed part to final through a temporary
// file next to it, then removes part.
func decompressFile(part, final, enc string) error {
	in, err := os.Open(part)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(final), "."+filepath.Base(final)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := decompress.Copy(tmp, in, enc); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return err
	}
	return os.Remove(part)
}
