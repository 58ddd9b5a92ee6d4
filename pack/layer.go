package pack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
)

// estargzWorkers fixes how estargz splits a layer for parallel compression.
// The split decides chunk boundaries, so it must not follow GOMAXPROCS or
// digests would differ between machines.
const estargzWorkers = 4

// gzipBlock is pgzip's block size; fixed because it shapes the output.
const gzipBlock = 1 << 20

// builtLayer is a finished layer blob.
type builtLayer struct {
	Desc   v1.Descriptor
	DiffID v1.Hash
}

// blobSink receives one layer blob; the layout's BlobWriter implements it.
type blobSink interface {
	io.Writer
	Digest() v1.Hash
	Size() int64
}

// countingReaderAt reports bytes read to progress.
type countingReaderAt struct {
	r  io.ReaderAt
	fn func(int64)
}

func (c countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.fn(int64(n))
	return n, err
}

type countingWriter struct {
	w  io.Writer
	fn func(int64)
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.fn(int64(n))
	return n, err
}

// encodeLayer streams the layer described by ts in format f into sink and
// returns its descriptor (digest and size taken from the sink) and diffID.
// progress is called with uncompressed bytes consumed.
func encodeLayer(ctx context.Context, ts *tarStream, f Format, level int, prioritized []string, sink blobSink, progress func(int64)) (builtLayer, error) {
	var out builtLayer
	annotations := map[string]string{}
	src := countingWriter{fn: progress}
	switch f {
	case FormatTar:
		src.w = sink
		if _, err := ts.WriteTo(ctxWriter{ctx, src}); err != nil {
			return out, err
		}
		out.DiffID = sink.Digest()
	case FormatGzip, FormatZstd:
		diff := sha256.New()
		var enc io.WriteCloser
		if f == FormatGzip {
			zw, err := pgzip.NewWriterLevel(sink, level)
			if err != nil {
				return out, err
			}
			if err := zw.SetConcurrency(gzipBlock, 4); err != nil {
				return out, err
			}
			enc = zw
		} else {
			zw, err := zstd.NewWriter(sink, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)), zstd.WithEncoderConcurrency(2),
				// Weights have few repeats; entropy-coding literals is where zstd gains.
				zstd.WithAllLitEntropyCompression(true))
			if err != nil {
				return out, err
			}
			enc = zw
		}
		src.w = io.MultiWriter(diff, enc)
		if _, err := ts.WriteTo(ctxWriter{ctx, src}); err != nil {
			enc.Close()
			return out, err
		}
		if err := enc.Close(); err != nil {
			return out, fmt.Errorf("compressing layer: %w", err)
		}
		out.DiffID = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(diff.Sum(nil))}
	case FormatEstargz, FormatZstdChunked:
		opts := []estargz.Option{
			estargz.WithContext(ctx),
			estargz.WithParallelism(estargzWorkers),
			estargz.WithPrioritizedFiles(prioritized),
		}
		var meta map[string]string
		if f == FormatZstdChunked {
			meta = map[string]string{}
			opts = append(opts, estargz.WithCompression(&chunkedZstd{
				Compressor:   &zstdchunked.Compressor{CompressionLevel: zstd.EncoderLevelFromZstd(level), Metadata: meta},
				Decompressor: &zstdchunked.Decompressor{},
			}))
		} else {
			opts = append(opts, estargz.WithCompression(fastGzip{
				GzipCompressor:   estargz.NewGzipCompressorWithLevel(level),
				GzipDecompressor: &estargz.GzipDecompressor{},
				level:            level,
			}))
		}
		var read atomic.Int64
		ra := countingReaderAt{r: ts, fn: func(n int64) { read.Add(n); progress(n) }}
		blob, err := estargz.Build(io.NewSectionReader(ra, 0, ts.size), opts...)
		if err != nil {
			return out, fmt.Errorf("building %s layer: %w", f, err)
		}
		_, err = io.Copy(ctxWriter{ctx, sink}, blob)
		if cerr := blob.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return out, fmt.Errorf("building %s layer: %w", f, err)
		}
		usize, err := blob.UncompressedSize()
		if err != nil {
			return out, fmt.Errorf("building %s layer: %w", f, err)
		}
		if out.DiffID, err = v1.NewHash(blob.DiffID().String()); err != nil {
			return out, err
		}
		annotations[AnnotationTOCDigest] = blob.TOCDigest().String()
		annotations[AnnotationUncompressedSize] = strconv.FormatInt(usize, 10)
		for k, v := range meta {
			annotations[k] = v
		}
	default:
		return out, fmt.Errorf("unknown format %q", f)
	}
	out.Desc = v1.Descriptor{MediaType: f.MediaType(), Digest: sink.Digest(), Size: sink.Size(), Annotations: annotations}
	return out, nil
}

// fastGzip is estargz's gzip compression with klauspost's gzip, which
// compresses and decompresses (Build decompresses the blob again for its
// diffID) about twice as fast as the standard library. The TOC and footer
// are estargz's own.
type fastGzip struct {
	*estargz.GzipCompressor
	*estargz.GzipDecompressor
	level int
}

func (g fastGzip) Writer(w io.Writer) (estargz.WriteFlushCloser, error) {
	return kgzip.NewWriterLevel(w, g.level)
}

func (g fastGzip) Reader(r io.Reader) (io.ReadCloser, error) {
	return kgzip.NewReader(r)
}

// chunkedZstd is zstd:chunked with the encoder options pack uses for zstd
// layers (entropy-coded literals: weights have few repeats, so that is
// where zstd gains); the TOC and footer are the estargz module's.
type chunkedZstd struct {
	*zstdchunked.Compressor
	*zstdchunked.Decompressor
	pool sync.Pool
}

func (c *chunkedZstd) Writer(w io.Writer) (estargz.WriteFlushCloser, error) {
	if e, ok := c.pool.Get().(*zstd.Encoder); ok {
		e.Reset(w)
		return &pooledZstd{e, c}, nil
	}
	e, err := zstd.NewWriter(w, zstd.WithEncoderLevel(c.CompressionLevel), zstd.WithEncoderConcurrency(1),
		zstd.WithAllLitEntropyCompression(true))
	if err != nil {
		return nil, err
	}
	return &pooledZstd{e, c}, nil
}

type pooledZstd struct {
	*zstd.Encoder
	c *chunkedZstd
}

func (p *pooledZstd) Close() error {
	if err := p.Encoder.Close(); err != nil {
		return err
	}
	p.c.pool.Put(p.Encoder)
	return nil
}

type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
