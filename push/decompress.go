package push

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/modelcar/modelcar/internal/limits"
)

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// layerDecoder decompresses layer blobs, one at a time, with bounded
// memory whatever a blob says: gzip keeps 32 KiB of history, and a zstd
// frame whose window is over window bytes (see limits.ZstdWindow) is refused
// before anything is allocated for it. Its buffers and decoders are kept
// for the next layer, so that a pull of many layers does not leave one
// window of garbage per layer for the collector.
type layerDecoder struct {
	window   uint64
	parallel int // layers decoded at once, sharing limits.ZstdWindowBudget
	br       *bufio.Reader
	buf      []byte // a copy buffer for whoever reads the layer
	gz       *gzip.Reader
	zs       *zstd.Decoder
}

// layerBufSize is the read-ahead on a compressed stream and the copy buffer.
const layerBufSize = 1 << 20

func newLayerDecoder(parallel int) *layerDecoder {
	return &layerDecoder{
		window:   limits.ZstdWindow(parallel),
		parallel: parallel,
		br:       bufio.NewReaderSize(nil, layerBufSize),
		buf:      make([]byte, layerBufSize),
	}
}

// open returns the reader of blob r as read (buffered: everything read from
// r is read through it) and its uncompressed stream: gzip and zstd are
// recognised from the first bytes, anything else is returned as is (a
// plain tar). They are valid until the next open.
func (d *layerDecoder) open(r io.Reader) (blob *bufio.Reader, tar io.Reader, err error) {
	d.br.Reset(r)
	magic, _ := d.br.Peek(len(zstdMagic)) // a short or empty blob is plain tar, or an error later
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		if d.gz == nil {
			d.gz, err = gzip.NewReader(d.br)
		} else {
			err = d.gz.Reset(d.br)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return d.br, d.gz, nil
	case bytes.HasPrefix(magic, zstdMagic):
		if d.zs == nil {
			d.zs, err = zstd.NewReader(d.br,
				zstd.WithDecoderConcurrency(1), // layers are decoded in parallel already
				zstd.WithDecoderMaxWindow(d.window),
				zstd.WithDecoderMaxMemory(d.window),
				zstd.WithDecoderLowmem(true))
		} else {
			err = d.zs.Reset(d.br)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		z := &zstdReader{zr: d.zs, d: d}
		var h zstd.Header
		if first, _ := d.br.Peek(zstd.HeaderMaxSize); h.Decode(first) == nil {
			z.declared = h.WindowSize
		}
		return d.br, z, nil
	}
	return d.br, d.br, nil
}

// close releases the decoders.
func (d *layerDecoder) close() {
	if d.zs != nil {
		d.zs.Close()
	}
}

// zstdReader says what a window over the limit means.
type zstdReader struct {
	zr       *zstd.Decoder
	d        *layerDecoder
	declared uint64 // the first frame's window, 0 if unknown
}

func (z *zstdReader) Read(p []byte) (int, error) {
	n, err := z.zr.Read(p)
	if errors.Is(err, zstd.ErrWindowSizeExceeded) {
		return n, &WindowError{Declared: z.declared, Limit: z.d.window, Parallel: z.d.parallel}
	}
	return n, err
}

// WindowError is a zstd frame whose window is over what one layer may use.
type WindowError struct {
	// Declared is the window the first frame declares (0 if a later
	// frame's was over the limit).
	Declared uint64
	// Limit is what each of Parallel layers decoded at once may use.
	Limit    uint64
	Parallel int
}

func (e *WindowError) Error() string {
	what := "a zstd frame's window"
	if e.Declared > e.Limit {
		what = "zstd window " + limits.Bytes(int64(e.Declared))
	}
	share := ""
	if e.Parallel > 1 && e.Limit < limits.ZstdWindowBudget {
		share = fmt.Sprintf(" (%s shared by %d layers decoded at once; fewer parallel jobs give each more, up to %s)",
			limits.Bytes(limits.ZstdWindowBudget), e.Parallel, limits.Bytes(limits.ZstdWindowBudget))
	}
	return fmt.Sprintf("%s is over the %s a layer may use%s", what, limits.Bytes(int64(e.Limit)), share)
}

func (e *WindowError) Unwrap() error { return zstd.ErrWindowSizeExceeded }
