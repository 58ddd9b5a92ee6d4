package standin

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// logger writes vLLM's log lines: "(PROCESS pid=N) LEVEL MM-DD HH:MM:SS
// [file.py:line] message", each line in one write so that the container
// runtime stamps it when it happens. The kubelet adds the RFC3339 timestamp
// that `kubectl logs --timestamps` (and modelcar measure) reads.
type logger struct {
	mu  sync.Mutex
	w   io.Writer
	pid int
	now func() time.Time
}

// vLLM's processes: the API server and the engine core.
const (
	apiServer  = "APIServer"
	engineCore = "EngineCore_DP0"
)

func (l *logger) logf(proc, level, source, format string, args ...any) {
	line := fmt.Sprintf("(%s pid=%d) %s %s [%s] %s\n", proc, l.pid, level, l.now().Format("01-02 15:04:05"), source,
		fmt.Sprintf(format, args...))
	l.write(line)
}

// uvicorn writes uvicorn's own lines ("INFO:     Application startup
// complete."), which vLLM's API server prefixes with its process.
func (l *logger) uvicorn(format string, args ...any) {
	l.write(fmt.Sprintf("(%s pid=%d) INFO:     %s\n", apiServer, l.pid, fmt.Sprintf(format, args...)))
}

func (l *logger) write(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	io.WriteString(l.w, line)
}
