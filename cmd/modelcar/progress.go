package main

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/modelcar/modelcar/internal/human"
	"github.com/modelcar/modelcar/pack"
)

// humanBytes is how the CLI prints a size to people ("1.5 GiB"): the one
// format internal/human owns.
func humanBytes(n int64) string { return human.Bytes(n) }

// isTerminal reports whether w (or the writer a redacting writer wraps)
// is a terminal.
func isTerminal(w io.Writer) bool {
	if u, ok := w.(interface{ Unwrap() io.Writer }); ok {
		w = u.Unwrap()
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// packProgress renders one byte bar for the whole pack on stderr, or nothing
// when stderr is not a terminal or --quiet is set.
type packProgress struct {
	mu  sync.Mutex
	bar *progressbar.ProgressBar
}

func newPackProgress(w io.Writer, quiet bool) *packProgress {
	if quiet || !isTerminal(w) {
		return nil
	}
	return &packProgress{bar: progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(w),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetDescription("packing"),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionShowCount(),
		progressbar.OptionClearOnFinish(),
	)}
}

// event advances the bar.
func (p *packProgress) event(e pack.ProgressEvent) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case e.Plan:
		p.bar.ChangeMax64(e.Total)
	case e.Done && e.Reused:
		p.bar.Add64(e.Total)
	case e.Read > 0:
		p.bar.Add64(e.Read)
	}
	if e.Done && len(e.Files) > 0 {
		p.bar.Describe(fmt.Sprintf("packed %s", e.Files[0]))
	}
}

func (p *packProgress) finish() {
	if p != nil {
		p.bar.Finish()
	}
}
