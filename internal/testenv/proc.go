package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcar/modelcar/internal/toolcache"
)

// process is one run of a daemon started by startProcess.
type process struct {
	name  string        // for messages ("containerd", "registry", ...)
	quiet bool          // stop logs only the SIGKILL escalation
	pid   int           // valid once startProcess has returned
	done  chan struct{} // closed when the process has exited
	err   error         // its exit status, valid once done is closed
}

// startProcess starts cmd with its stdout and stderr appended to logFile,
// after header (if not empty). The child gets its own process group, so a ^C
// on the test doesn't race the orderly shutdown, and Pdeathsig SIGTERM:
// should the test binary die without running its cleanups (killed, or cut
// off by a closed stdout pipe), the daemon is told to stop too instead of
// lingering. Pdeathsig follows the thread that started the child, so it is
// started from a locked thread the runtime keeps alive until Wait returns.
//
// An error opening logFile is returned as is; a failed start as
// "starting BIN: ERR".
func startProcess(name string, cmd *exec.Cmd, logFile, header string) (*process, error) {
	logf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	if header != "" {
		fmt.Fprint(logf, header)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	p := &process{name: name, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: this thread stays the child's parent until Wait
		// returns, then exits with the goroutine.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	err = <-started
	logf.Close() // the child holds its own descriptor
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Args[0], err)
	}
	p.pid = cmd.Process.Pid
	return p, nil
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process, then SIGKILL if it has not exited
// after timeout, and waits as long again for it to go. It signals the PID it
// started, nothing else.
func (p *process) stop(t testing.TB, timeout time.Duration) {
	if p.exited() {
		if !p.quiet {
			t.Logf("testenv: %s (pid %d) had already exited: %v", p.name, p.pid, p.err)
		}
		return
	}
	if err := syscall.Kill(p.pid, syscall.SIGTERM); err != nil && !p.quiet {
		t.Logf("testenv: SIGTERM %s pid %d: %v", p.name, p.pid, err)
	}
	select {
	case <-p.done:
		return
	case <-time.After(timeout):
	}
	t.Logf("testenv: %s pid %d ignored SIGTERM for %v; sending SIGKILL", p.name, p.pid, timeout)
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !p.quiet {
		t.Logf("testenv: SIGKILL %s pid %d: %v", p.name, p.pid, err)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Errorf("testenv: %s pid %d still running after SIGKILL", p.name, p.pid)
	}
}

// buildPinned returns the cached binary name-VERSION, building it first when
// it is missing. VERSION is the one the go.mod in the directory findModDir
// returns requires of module, else fallback when that directory cannot be
// found. buildArgs gives the go command's arguments that build version into
// out. Builds are serialised across processes by a lock file and installed
// by rename (toolcache.Install). skip is set when the binary cannot be built
// here for want of tools.
func buildPinned(t testing.TB, name, module, fallback string, findModDir func() (string, error), buildArgs func(version, out string) []string) (path, skip string, err error) {
	t.Helper()
	cache, err := toolcache.Dir()
	if err != nil {
		return "", "", err
	}
	modDir, modErr := findModDir()
	version := fallback
	if modErr == nil {
		if version, err = toolcache.RequiredVersion(filepath.Join(modDir, "go.mod"), module); err != nil {
			return "", "", err
		}
	}
	path = filepath.Join(cache, toolcache.Name(name, version))
	if toolcache.IsExecutable(path) {
		return path, "", nil
	}
	if modErr != nil {
		return "", fmt.Sprintf("testenv: %s %s is not in %s and cannot be built: %v; run %s", name, version, cache, modErr, InstallScript), nil
	}
	goBin, err := toolcache.FindGo()
	if err != nil {
		return "", fmt.Sprintf("testenv: %s %s is not in %s and cannot be built: %v; run %s", name, version, cache, err, InstallScript), nil
	}

	// Serialised across processes: go test runs packages in parallel, and
	// each would otherwise build its own copy.
	var begin time.Time
	built, err := toolcache.Install(path, func(tmp string) error {
		begin = time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), peerBuildTimeout)
		defer cancel()
		args := buildArgs(version, tmp)
		var stdout, stderr bytes.Buffer
		cmd := toolcache.GoCommand(ctx, goBin, modDir, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				err = fmt.Errorf("%w (timed out after %v)", err, peerBuildTimeout)
			}
			out := runResult{stdout: stdout.Bytes(), stderr: stderr.Bytes()}.combined()
			return fmt.Errorf("building %s %s in %s: %s: %v\n%s", name, version, modDir, quoteArgs("go", args), err, out)
		}
		return nil
	})
	if err != nil {
		return "", "", err
	}
	if built {
		t.Logf("testenv: built %s %s into %s in %v", name, version, path, time.Since(begin).Round(time.Millisecond))
	}
	return path, "", nil
}

// sandboxEnv is the caller's environment with the variables in overrides
// replaced by their values and those named in drop removed.
func sandboxEnv(overrides map[string]string, drop ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := overrides[k]; ok {
			continue
		}
		if slices.Contains(drop, k) {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range overrides {
		env = append(env, k+"="+v)
	}
	return env
}
