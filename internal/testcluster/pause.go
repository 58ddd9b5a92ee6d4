package testcluster

import (
	"archive/tar"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/modelcar/modelcar/internal/testenv"
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
	return testenv.OneLayerImage([]testenv.TarFile{{Header: tar.Header{Name: "pause", Mode: 0o755, Typeflag: tar.TypeReg}, Data: exe}},
		func(c *v1.Config) {
			c.Entrypoint = []string{"/pause"}
			c.User = "65535:65535"
		})
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
