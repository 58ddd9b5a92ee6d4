package testcluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/modelcar/modelcar/internal/testenv"
)

// StartRegistry starts Debian's docker-registry (distribution) in dir as a
// local plain-HTTP registry on addr (127.0.0.1:PORT), filesystem storage in
// dir/data, deletes enabled, its process detached and recorded in dir's PID
// file (StopDir stops it): `make registry`. It returns once GET /v2/
// answers. A registry already running in dir is left as it is.
func StartRegistry(ctx context.Context, dir, addr string) error {
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		return fmt.Errorf("testcluster: registry address %q: want 127.0.0.1:PORT", addr)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return err
	}
	if running, err := runningIn(abs); err != nil {
		return err
	} else if len(running) > 0 {
		return nil
	}
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return fmt.Errorf("testcluster: docker-registry not found (Debian: apt-get install docker-registry, or make deps): %w", err)
	}
	cfg := testenv.RegistryConfig(filepath.Join(abs, "data"), addr, "")
	cfgPath := filepath.Join(abs, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	p, err := startProcess(abs, "docker-registry", bin, []string{"serve", cfgPath}, nil, true)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * time.Second}
	if err := waitHTTP(ctx, client, p, "http://"+addr+"/v2/", 30*time.Second, func(string) bool { return true }); err != nil {
		_ = StopDir(abs)
		return err
	}
	return nil
}
