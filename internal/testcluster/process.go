package testcluster

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// PIDFile is the file, in a cluster's directory, that records the processes
// it started, one "NAME PID EXECUTABLE" line each in start order. StopDir
// stops them from it.
const PIDFile = "pids"

// process is one control-plane process.
type process struct {
	name string
	pid  int
	exe  string
	log  string
	// done is closed once the process has exited. For a process this Go
	// process started it follows cmd.Wait; for one found in a PID file it
	// is nil and exit is polled.
	done chan struct{}
	err  error // cmd.Wait's result, valid after done is closed
}

// startProcess starts bin with args and extra environment, its stdout and
// stderr appended to logPath, and records it in dir's PID file. detach puts
// it in a session of its own that outlives this process; otherwise it is
// killed when this process dies (PR_SET_PDEATHSIG), so an aborted test run
// leaves nothing behind.
func startProcess(dir, name, bin string, args, env []string, detach bool) (*process, error) {
	return startProcessExe(dir, name, bin, bin, args, env, detach)
}

// startProcessExe is startProcess for a launcher that execs exe in its own
// place (nsenter ... -- exe): the PID file records exe, which is what
// /proc/PID/exe names once the launcher has exec'd.
func startProcessExe(dir, name, bin, exe string, args, env []string, detach bool) (*process, error) {
	logPath := filepath.Join(dir, "logs", name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "==> %s %s\n", time.Now().Format(time.RFC3339), strings.Join(append([]string{bin}, args...), " "))

	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	p := &process{name: name, exe: exe, log: logPath, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig follows the thread that forked the child, not the
		// process: started from any thread, the child was SIGKILLed when
		// that thread exited, which the runtime does when another goroutine
		// locked to it ends (testenv starts its daemons so). This thread
		// stays locked, the child's parent, until Wait returns.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p.pid = cmd.Process.Pid
	if err := appendPID(dir, p); err != nil {
		_ = cmd.Process.Kill()
		<-p.done
		return nil, err
	}
	return p, nil
}

func appendPID(dir string, p *process) error {
	f, err := os.OpenFile(filepath.Join(dir, PIDFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(f, "%s %d %s\n", p.name, p.pid, p.exe); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readPIDs reads dir's PID file. A missing file is no processes.
func readPIDs(dir string) ([]*process, error) {
	f, err := os.Open(filepath.Join(dir, PIDFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var procs []*process
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.SplitN(strings.TrimSpace(sc.Text()), " ", 3)
		if len(fields) != 3 {
			continue
		}
		pid, err := strconv.Atoi(fields[1])
		if err != nil || pid <= 1 {
			continue
		}
		procs = append(procs, &process{name: fields[0], pid: pid, exe: fields[2],
			log: filepath.Join(dir, "logs", fields[0]+".log")})
	}
	return procs, sc.Err()
}

// alive reports whether p is still running (and, for a process read from a
// PID file, is still the executable that was started: a PID reused by
// something else is not ours to signal).
func (p *process) alive() bool {
	if p.done != nil {
		select {
		case <-p.done:
			return false
		default:
			return true
		}
	}
	if err := syscall.Kill(p.pid, 0); err != nil {
		return false
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.pid))
	if err != nil {
		return false
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	if exe != p.exe {
		return false
	}
	// A zombie (exited, not yet reaped by its parent) is not running.
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err == nil {
		if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			return false
		}
	}
	return true
}

// stop sends SIGTERM, waits up to grace for p to exit, then sends SIGKILL
// and waits again. It returns an error only when p outlives SIGKILL.
func (p *process) stop(grace time.Duration) error {
	if !p.alive() {
		return nil
	}
	_ = syscall.Kill(p.pid, syscall.SIGTERM)
	if p.waitExit(grace) {
		return nil
	}
	_ = syscall.Kill(p.pid, syscall.SIGKILL)
	if p.waitExit(10 * time.Second) {
		return nil
	}
	return fmt.Errorf("%s (pid %d) still running after SIGKILL", p.name, p.pid)
}

// waitExit waits up to d for p to exit.
func (p *process) waitExit(d time.Duration) bool {
	if p.done != nil {
		select {
		case <-p.done:
			return true
		case <-time.After(d):
			return false
		}
	}
	deadline := time.Now().Add(d)
	for p.alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond) // polling a process we cannot wait for
	}
	return true
}

// exitError describes why p exited early, with the end of its log.
func (p *process) exitError() error {
	tail := tailFile(p.log, 30)
	err := fmt.Errorf("%s exited (%v); end of %s:\n%s", p.name, p.err, p.log, tail)
	if strings.Contains(tail, "address already in use") {
		err = fmt.Errorf("%w: %w", errPortInUse, err)
	}
	return err
}

// stopGrace is how long each process gets between SIGTERM and SIGKILL.
var stopGrace = map[string]time.Duration{
	"kube-apiserver": 30 * time.Second, // drains requests, then exits
}

const defaultStopGrace = 10 * time.Second

// stopAll stops procs in reverse order, each fully before the next (so the
// apiserver has exited before etcd is signalled), and returns the errors.
func stopAll(procs []*process) error {
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		grace, ok := stopGrace[p.name]
		if !ok {
			grace = defaultStopGrace
		}
		if err := p.stop(grace); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// StopDir stops, by the PIDs recorded in dir's PID file, every process a
// cluster started there (in reverse start order, each waited for), then
// removes the PID file. It is what `make cluster-down` runs; stopping a
// cluster that is not running is not an error.
func StopDir(dir string) error {
	procs, err := readPIDs(dir)
	if err != nil {
		return err
	}
	if err := stopAll(procs); err != nil {
		return err
	}
	// Real nodes leave containers, mounts, cgroups and a namespace behind
	// their processes.
	if err := teardownNodes(dir); err != nil {
		return err
	}
	err = os.Remove(filepath.Join(dir, PIDFile))
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return err
}

// Running reports whether any process of the cluster in dir (by its PID
// file) still runs.
func Running(dir string) (bool, error) {
	procs, err := runningIn(dir)
	return len(procs) > 0, err
}

// runningIn returns the processes of dir's PID file that still run.
func runningIn(dir string) ([]*process, error) {
	procs, err := readPIDs(dir)
	if err != nil {
		return nil, err
	}
	var alive []*process
	for _, p := range procs {
		if p.alive() {
			alive = append(alive, p)
		}
	}
	return alive, nil
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. The listeners are
// held until all ports are chosen, so the ports differ; another process may
// still take one before its user binds it (a failed start says so).
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tailFile returns at most the last n lines of the file at path.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	// Logs can be large: read the last 256 KiB at most.
	const max = 256 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		_, _ = f.Seek(fi.Size()-max, io.SeekStart)
	}
	data, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
