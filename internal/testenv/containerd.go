package testenv

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Namespace is the containerd namespace every Ctr call uses.
const Namespace = "modelcar-test"

// Snapshotter is the snapshotter images are unpacked with. The native
// snapshotter keeps every committed snapshot as a plain directory holding the
// full root filesystem up to that layer, so reading an unpacked image needs
// no mount (see UnpackedRoot).
const Snapshotter = "native"

// Containerd is a private containerd daemon started by StartContainerd.
type Containerd struct {
	// Socket is the gRPC unix socket (pass it to ctr -a or a client).
	Socket string
	// Root is containerd's persistent root directory (content store,
	// metadata, snapshots).
	Root string
	// State is containerd's state directory.
	State string
	// Config is the config.toml the daemon was started with.
	Config string
	// Log is the file the daemon's stdout and stderr go to.
	Log string

	ctr  string
	proc *process
}

// containerdConfig is a containerd 1.6+ (config version 2) configuration for
// a private daemon: every path lives under dir, the CRI plugin (which wants
// CNI, network and a sandbox image) is disabled, as are snapshotters that
// can't work here and only add noise. No TCP listener is configured: the
// debug and metrics addresses stay empty, and ttrpc defaults to the gRPC
// socket path plus ".ttrpc".
func containerdConfig(dir string) string {
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	return strings.Join([]string{
		`version = 2`,
		`root = ` + q(filepath.Join(dir, "root")),
		`state = ` + q(filepath.Join(dir, "state")),
		`disabled_plugins = [`,
		`  "io.containerd.grpc.v1.cri",`,
		`  "io.containerd.snapshotter.v1.aufs",`,
		`  "io.containerd.snapshotter.v1.btrfs",`,
		`  "io.containerd.snapshotter.v1.devmapper",`,
		`  "io.containerd.snapshotter.v1.zfs",`,
		`]`,
		``,
		`[grpc]`,
		`  address = ` + q(filepath.Join(dir, "containerd.sock")),
		``,
		`[ttrpc]`,
		`  address = ` + q(filepath.Join(dir, "containerd.sock.ttrpc")),
		``,
		`[debug]`,
		`  address = ""`,
		`  level = "debug"`,
		``,
		`[metrics]`,
		`  address = ""`,
		``,
		`[plugins]`,
		`  [plugins."io.containerd.internal.v1.opt"]`,
		`    path = ` + q(filepath.Join(dir, "opt")),
		``,
	}, "\n")
}

// StartContainerd starts a private containerd (the Debian package's binary)
// as root with its own config.toml, root, state directory and socket under a
// temporary directory, waits until `ctr -a SOCK version` answers, and stops
// it (SIGTERM, then SIGKILL, by PID) in cleanup. The daemon's own log goes to
// c.Log; its tail is written to t.Log when the test failed.
//
// Missing binaries or running as non-root skip the test (fail it under
// MODELCAR_E2E=1).
func StartContainerd(t testing.TB) *Containerd {
	t.Helper()
	bin := LookPath(t, "containerd")
	ctr := LookPath(t, "ctr")
	requireRoot(t, "a private containerd")

	dir := shortTempDir(t, "mc-ctd-")
	c := &Containerd{
		Socket: filepath.Join(dir, "containerd.sock"),
		Root:   filepath.Join(dir, "root"),
		State:  filepath.Join(dir, "state"),
		Config: filepath.Join(dir, "config.toml"),
		Log:    filepath.Join(dir, "containerd.log"),
		ctr:    ctr,
	}
	// Registered first, so it runs last: after the daemon is stopped.
	cleanupServiceDir(t, "containerd", dir, c.Log, 80)

	if err := os.WriteFile(c.Config, []byte(containerdConfig(dir)), 0o644); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cmd := exec.Command(bin, "--config", c.Config)
	cmd.Dir = dir
	p, err := startProcess("containerd", cmd, c.Log, "")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	c.proc = p
	t.Cleanup(func() { c.stop(t) })

	deadline := time.Now().Add(30 * time.Second)
	var last runResult
	for {
		if p.exited() {
			t.Fatalf("testenv: containerd (pid %d) exited during startup: %v\n%s", p.pid, p.err, tailFile(c.Log, 40))
		}
		if _, err := os.Stat(c.Socket); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			last = run(ctx, nil, c.ctr, "-a", c.Socket, "version")
			cancel()
			if last.err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: containerd (pid %d) did not answer `ctr version` within 30s: %v\n%s", p.pid, last.err, last.combined())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("testenv: containerd pid %d on %s", p.pid, c.Socket)
	return c
}

// stop sends SIGTERM to the daemon, then SIGKILL if it has not exited after
// 10 seconds. It signals the PID it started, nothing else.
func (c *Containerd) stop(t testing.TB) {
	c.proc.stop(t, 10*time.Second)
}

// ctrArgs prefixes args with the daemon address and test namespace.
func (c *Containerd) ctrArgs(args []string) []string {
	return append([]string{"-a", c.Socket, "-n", Namespace}, args...)
}

// ctrRun runs ctr without failing the test.
func (c *Containerd) ctrRun(args ...string) runResult {
	return run(context.Background(), ctrEnv(), c.ctr, c.ctrArgs(args)...)
}

// ctrEnv is the environment ctr runs with: the caller's, minus the variables
// that would point ctr at another daemon, namespace or snapshotter.
func ctrEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE", "CONTAINERD_SNAPSHOTTER":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Ctr runs `ctr -a SOCK -n modelcar-test ARGS...` and returns its combined
// output, or fails the test with it.
func (c *Containerd) Ctr(t testing.TB, args ...string) string {
	t.Helper()
	r := c.ctrRun(args...)
	if r.err != nil {
		t.Fatalf("testenv: %s: %v\n%s", quoteArgs("ctr", c.ctrArgs(args)), r.err, r.combined())
	}
	return r.combined()
}

// ctrStdout is Ctr, but returns stdout only (for output that is parsed).
func (c *Containerd) ctrStdout(t testing.TB, args ...string) []byte {
	t.Helper()
	r := c.ctrRun(args...)
	if r.err != nil {
		t.Fatalf("testenv: %s: %v\n%s", quoteArgs("ctr", c.ctrArgs(args)), r.err, r.combined())
	}
	return r.stdout
}

// ImportArchive imports an OCI archive (a tar of an OCI image layout whose
// index.json entries carry org.opencontainers.image.ref.name annotations
// such as "latest") with the native snapshotter and unpacks it, for the
// host's platform (linux/GOARCH: the image config must say so, or the image
// must be an index with such a manifest). It returns the image names
// containerd registered, in import order.
//
// Names follow `ctr images import` without --base-name: a full reference
// ("registry/repo:tag", or an io.containerd.image.name annotation) is kept, a
// bare tag such as "latest" becomes "import-YYYY-MM-DD:latest".
func (c *Containerd) ImportArchive(t testing.TB, archive string) []string {
	t.Helper()
	out := c.Ctr(t, "images", "import", "--snapshotter", Snapshotter, archive)
	// ctr prints "unpacking NAME (sha256:...)...done" for every image it
	// registered and unpacked.
	var names []string
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "unpacking ")
		if !ok {
			continue
		}
		name, _, ok := strings.Cut(rest, " (")
		if ok && name != "" {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		t.Fatalf("testenv: ctr images import %s registered no image (do the index.json entries carry org.opencontainers.image.ref.name annotations?):\n%s", archive, out)
	}
	return names
}

// ociDescriptor is the part of an OCI descriptor that UnpackedRoot needs.
type ociDescriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Platform  *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	} `json:"platform"`
}

// ociManifestOrIndex decodes both image manifests and image indexes (and
// their Docker schema 2 equivalents).
type ociManifestOrIndex struct {
	MediaType string          `json:"mediaType"`
	Config    *ociDescriptor  `json:"config"`
	Manifests []ociDescriptor `json:"manifests"`
}

// imageTarget returns the digest an image name points at.
func (c *Containerd) imageTarget(t testing.TB, image string) string {
	t.Helper()
	out := c.ctrStdout(t, "images", "ls")
	// REF TYPE DIGEST SIZE PLATFORMS LABELS
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == image {
			return f[2]
		}
	}
	t.Fatalf("testenv: containerd has no image %q in namespace %s; images:\n%s", image, Namespace, out)
	return ""
}

// contentJSON reads a blob from containerd's content store and decodes it.
func (c *Containerd) contentJSON(t testing.TB, digest string, v any) {
	t.Helper()
	data := c.ctrStdout(t, "content", "get", digest)
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("testenv: decoding blob %s: %v", digest, err)
	}
}

// configDigest resolves an image's target (index or manifest) to the config
// digest of the manifest for the host platform, the one ctr unpacked.
func (c *Containerd) configDigest(t testing.TB, image, digest string) string {
	t.Helper()
	for depth := 0; depth < 8; depth++ {
		var m ociManifestOrIndex
		c.contentJSON(t, digest, &m)
		if m.Config != nil && m.Config.Digest != "" {
			return m.Config.Digest
		}
		if len(m.Manifests) == 0 {
			t.Fatalf("testenv: image %s: blob %s is neither a manifest nor an index", image, digest)
		}
		next := ""
		for _, d := range m.Manifests {
			if d.Platform != nil && d.Platform.OS == runtime.GOOS && d.Platform.Architecture == runtime.GOARCH {
				next = d.Digest
				break
			}
		}
		if next == "" && len(m.Manifests) == 1 {
			next = m.Manifests[0].Digest
		}
		if next == "" {
			t.Fatalf("testenv: image %s: index %s has no manifest for %s/%s", image, digest, runtime.GOOS, runtime.GOARCH)
		}
		digest = next
	}
	t.Fatalf("testenv: image %s: indexes nested too deep", image)
	return ""
}

// chainID computes the OCI chain ID of a stack of layer diff IDs: the key
// under which containerd commits the snapshot holding all of them.
func chainID(diffIDs []string) string {
	id := diffIDs[0]
	for _, d := range diffIDs[1:] {
		sum := sha256.Sum256([]byte(id + " " + d))
		id = "sha256:" + hex.EncodeToString(sum[:])
	}
	return id
}

// UnpackedRoot returns a directory holding the fully unpacked root
// filesystem of image, as containerd unpacked it with the native snapshotter
// (ImportArchive does that). The directory belongs to containerd and must be
// treated as read-only; it stays valid until the test's cleanup.
//
// How: the image's config gives the layers' diff IDs, whose chain ID is the
// key of the committed top snapshot. Committed snapshots have no mounts, so
// UnpackedRoot creates a read-only view of it (`ctr snapshots view --mounts`),
// labels the view containerd.io/gc.root so that it, and with it the committed
// snapshot, outlives even a removal of the image, and returns the view's
// bind-mount source. The native snapshotter does not copy for a view: that
// source is the committed snapshot's own directory, which holds a full copy
// of the root filesystem. No mount(2) is performed, so this works
// wherever containerd itself runs (no CAP_SYS_ADMIN-dependent mounts, no
// unmount to forget); `ctr images mount` would need both. The view is
// removed in cleanup.
//
// An image with no layers yields an empty directory.
func (c *Containerd) UnpackedRoot(t testing.TB, image string) string {
	t.Helper()
	target := c.imageTarget(t, image)
	cfgDigest := c.configDigest(t, image, target)
	var cfg struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	c.contentJSON(t, cfgDigest, &cfg)
	if len(cfg.RootFS.DiffIDs) == 0 {
		return t.TempDir()
	}
	top := chainID(cfg.RootFS.DiffIDs)

	r := c.ctrRun("snapshots", "--snapshotter", Snapshotter, "info", top)
	if r.err != nil {
		t.Fatalf("testenv: image %s is not unpacked with the %s snapshotter (no snapshot %s): %v\n%s", image, Snapshotter, top, r.err, r.combined())
	}
	var info struct{ Kind string }
	if err := json.Unmarshal(r.stdout, &info); err == nil && info.Kind != "" && !strings.EqualFold(info.Kind, "committed") {
		t.Fatalf("testenv: snapshot %s of image %s is %s, not committed", top, image, info.Kind)
	}

	var mounts []struct {
		Type    string
		Source  string
		Options []string
	}
	for attempt := 1; ; attempt++ {
		var rnd [8]byte
		_, _ = rand.Read(rnd[:])
		key := "modelcar-testenv-view-" + hex.EncodeToString(rnd[:])
		out := c.ctrStdout(t, "snapshots", "--snapshotter", Snapshotter, "view", "--mounts", key, top)
		// ctr can neither create a snapshot inside a lease nor label it on
		// creation, so the garbage collector may take the unreferenced view
		// before it is labelled a GC root; then it is simply made again.
		r := c.ctrRun("snapshots", "--snapshotter", Snapshotter, "label", key,
			"containerd.io/gc.root="+time.Now().UTC().Format(time.RFC3339))
		if r.err != nil {
			if attempt < 5 && strings.Contains(r.combined(), "not found") {
				t.Logf("testenv: view %s was garbage-collected before it was labelled; retrying", key)
				continue
			}
			t.Fatalf("testenv: labelling view %s: %v\n%s", key, r.err, r.combined())
		}
		t.Cleanup(func() {
			if r := c.ctrRun("snapshots", "--snapshotter", Snapshotter, "rm", key); r.err != nil {
				t.Logf("testenv: removing view %s: %v\n%s", key, r.err, r.combined())
			}
		})
		if err := json.Unmarshal(out, &mounts); err != nil {
			t.Fatalf("testenv: decoding mounts of view %s: %v\n%s", key, err, out)
		}
		if len(mounts) != 1 || mounts[0].Type != "bind" || mounts[0].Source == "" {
			t.Fatalf("testenv: view %s of %s: want one bind mount, got %s", key, top, out)
		}
		break
	}
	dir := mounts[0].Source
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("testenv: view of %s: mount source %s is not a directory: %v", top, dir, err)
	}
	return dir
}
