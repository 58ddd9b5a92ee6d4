//go:build linux

package ocilayout

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// withUmask runs f with the process umask set to mask. Tests using it do
// not run in parallel.
func withUmask(mask int, f func()) {
	old := syscall.Umask(mask)
	defer syscall.Umask(old)
	f()
}

// checkModes walks root and fails on any directory not dirMode or regular
// file not fileMode.
func checkModes(t *testing.T, root string, dirMode, fileMode fs.FileMode) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		want := fileMode
		if st.IsDir() {
			want = dirMode
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %o, want %o", p, st.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// buildOutputs writes, under base, what modelcar writes: a layout staged
// beside its target and renamed into place (pack oci:), a layout made in
// place by Init (mirror oci:), and archives, single and split.
func buildOutputs(t *testing.T, base string) (staged, inplace, archive, split string) {
	t.Helper()
	staged = filepath.Join(base, "staged")
	l, err := Stage(staged)
	if err != nil {
		t.Fatal(err)
	}
	d := writeImage(t, l, "staged", 5000, nil)
	if err := l.Tag(d, "v1"); err != nil {
		t.Fatal(err)
	}
	l.Cleanup()
	if err := os.Rename(l.Dir, staged); err != nil {
		t.Fatal(err)
	}
	inplace = filepath.Join(base, "inplace")
	newLayout(t, inplace, "inplace", "v1", 5000)
	archive, split = filepath.Join(base, "x.tar"), filepath.Join(base, "split.tar")
	if err := WriteArchive(staged, archive); err != nil {
		t.Fatal(err)
	}
	if err := WriteArchiveSplit(staged, split, 4096); err != nil {
		t.Fatal(err)
	}
	return
}

// Layouts (staged and renamed, or made in place: directories, blobs,
// index.json, oci-layout) and archives are created 0755/0644 less the
// umask, as os.MkdirAll/os.Create would make them: with umask 022 others
// can read them; with umask 077 they stay private.
func TestOutputModesFollowUmask(t *testing.T) {
	for _, c := range []struct {
		umask          int
		dirMode, fMode fs.FileMode
	}{{0o022, 0o755, 0o644}, {0o077, 0o700, 0o600}, {0o002, 0o755, 0o644}} {
		withUmask(c.umask, func() {
			base := t.TempDir()
			staged, inplace, archive, split := buildOutputs(t, base)
			checkModes(t, staged, c.dirMode, c.fMode)
			checkModes(t, inplace, c.dirMode, c.fMode)
			checkModes(t, archive, c.dirMode, c.fMode)
			for _, v := range volumes(t, split) {
				checkModes(t, v, c.dirMode, c.fMode)
			}
		})
	}
}

const childEnv = "MODELCAR_OCILAYOUT_OTHER_USER_BASE"

// A layout or archive written by one user (root in CI) with umask 022 is
// readable by another; and a layout the reader may not read is reported as
// "permission denied", not as "not an OCI image layout (no oci-layout
// file)". Run as root, the reading half runs in a child process as uid
// 65534; run as another user, only the permission-denied half can run.
func TestLayoutReadableByOtherUser(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("the child runs TestOtherUserChild")
	}
	base := t.TempDir()
	private := filepath.Join(base, "private")
	withUmask(0o022, func() {
		buildOutputs(t, base)
		newLayout(t, private, "private", "v1", 100)
	})
	if os.Getuid() != 0 {
		if err := os.Chmod(private, 0); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(private, 0o755)
		checkPermissionDenied(t, private)
		t.Log("not root: the read by another user was not tried")
		return
	}
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	// The child needs to reach base and run a copy of the test binary.
	for d := base; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "ocilayout.test")
	src, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(dst, src)
	src.Close()
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "reachable"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestOtherUserChild$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+base)
	cmd.Dir = base
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil && (errors.Is(err, fs.ErrPermission) || strings.Contains(string(out), "--- SKIP: TestOtherUserChild")) {
		t.Skipf("cannot run a process as another user reaching %s here: %v\n%s", base, err, out)
	}
	if err != nil || !strings.Contains(string(out), "--- PASS: TestOtherUserChild") {
		t.Errorf("reading as uid 65534: %v\n%s", err, out)
	}
}

func checkPermissionDenied(t *testing.T, private string) {
	t.Helper()
	for name, open := range map[string]func(string) (*Layout, error){"Open": Open, "Init": Init} {
		_, err := open(private)
		if err == nil || !strings.Contains(err.Error(), "permission denied") || strings.Contains(err.Error(), "no oci-layout file") {
			t.Errorf("%s of a layout the user may not read: %v; want permission denied", name, err)
		}
	}
}

// TestOtherUserChild is the half of TestLayoutReadableByOtherUser that runs
// as another user.
func TestOtherUserChild(t *testing.T) {
	base := os.Getenv(childEnv)
	if base == "" {
		t.Skip("run by TestLayoutReadableByOtherUser")
	}
	if os.Getuid() == 0 {
		t.Fatal("the child runs as root")
	}
	if _, err := os.Stat(filepath.Join(base, "reachable")); err != nil {
		t.Skipf("the temporary directory is out of reach: %v", err)
	}
	for _, dir := range []string{filepath.Join(base, "staged"), filepath.Join(base, "inplace")} {
		l, err := Open(dir)
		if err != nil {
			t.Errorf("opening %s: %v", dir, err)
			continue
		}
		d, err := Resolve(l, dir, "v1", nil)
		if err != nil {
			t.Errorf("resolving in %s: %v", dir, err)
			continue
		}
		if _, err := l.ReadBlob(d.Digest, 1<<20); err != nil {
			t.Errorf("reading %s: %v", dir, err)
		}
	}
	for _, file := range []string{filepath.Join(base, "x.tar"), filepath.Join(base, "split.tar")} {
		a, err := OpenArchive(file)
		if err != nil {
			t.Errorf("opening %s: %v", file, err)
			continue
		}
		if d, err := Resolve(a, file, "v1", nil); err != nil {
			t.Errorf("resolving in %s: %v", file, err)
		} else if _, err := a.ReadBlob(d.Digest, 1<<20); err != nil {
			t.Errorf("reading %s: %v", file, err)
		}
		a.Close()
	}
	checkPermissionDenied(t, filepath.Join(base, "private"))
}
