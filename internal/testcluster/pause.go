package testcluster

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// PauseImage is the real node's sandbox image: internal/cmd/pause in one
// layer, imported into the node's containerd (nothing public can be pulled
// here) and pinned there, so the kubelet never pulls or collects it.
const (
	PauseImage   = "modelcar.test/pause:" + PauseVersion
	PauseVersion = "v1"
)

// pauseImage builds PauseImage around the pause binary at bin.
func pauseImage(bin string) (v1.Image, error) {
	exe, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	if err := tw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(exe)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(exe); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = []string{"/pause"}
	cf.Config.User = "65535:65535"
	return mutate.ConfigFile(img, cf)
}

// importPause puts PauseImage into the node's containerd (namespace k8s.io,
// unpacked for the CRI's snapshotter).
func (n *RealNode) importPause(ctx context.Context) error {
	bin, err := BinaryPath("pause")
	if err != nil {
		return err
	}
	img, err := pauseImage(bin)
	if err != nil {
		return fmt.Errorf("testcluster: pause image: %w", err)
	}
	tag, err := name.NewTag(PauseImage)
	if err != nil {
		return err
	}
	path := filepath.Join(n.Dir, "pause.tar")
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		return fmt.Errorf("testcluster: pause image: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return runCmd(ctx, "ctr", "--address", n.ContainerdSocket, "--namespace", "k8s.io", "images", "import", "--snapshotter", "overlayfs", path)
}
