package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	kgzip "github.com/klauspost/compress/gzip"

	"github.com/modelcar/modelcar/internal/testcluster"
)

// fetchesAtOnce is how many layers containerd fetches at a time (its
// transfer service's max_concurrent_downloads default), so the link's
// measured time is the one a pull could reach.
const fetchesAtOnce = 3

// pullLimits measures, in the same run as the cold starts, what bounds a
// cold pull of image on node: every layer fetched over the node's shaped
// link from inside its network namespace (fetchesAtOnce at a time, nothing
// unpacked or written), and for gzip layers the decompression alone on this
// CPU with the decoder containerd uses when neither igzip nor unpigz is
// installed (klauspost/compress gzip), read from the registry over the
// host's unshaped loopback. A pull cannot beat the slower of the two.
func pullLimits(ctx context.Context, node *testcluster.RealNode, image string) (link, decompress float64, err error) {
	ref, err := name.ParseReference(image, name.Insecure)
	if err != nil {
		return 0, 0, err
	}
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		return 0, 0, fmt.Errorf("reading %s: %w", image, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return 0, 0, err
	}
	args := []string{"netns", "exec", node.NetNS, "curl", "-sS", "--fail", "--parallel", "--parallel-max", fmt.Sprint(fetchesAtOnce)}
	var gzipped []int
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return 0, 0, err
		}
		args = append(args, "-o", "/dev/null", fmt.Sprintf("http://%s/v2/%s/blobs/%s", ref.Context().RegistryStr(), ref.Context().RepositoryStr(), d))
		if mt, err := l.MediaType(); err == nil && (mt == types.OCILayer || mt == types.DockerLayer) {
			gzipped = append(gzipped, i)
		}
	}
	start := time.Now()
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("fetching %s's layers in %s: %v: %s", image, node.NetNS, err, strings.TrimSpace(string(out)))
	}
	link = time.Since(start).Seconds()
	start = time.Now()
	for _, i := range gzipped {
		if err := gunzip(layers[i].Compressed); err != nil {
			return 0, 0, fmt.Errorf("decompressing layer %d of %s: %w", i, image, err)
		}
	}
	if len(gzipped) > 0 {
		decompress = time.Since(start).Seconds()
	}
	return link, decompress, nil
}

func gunzip(open func() (io.ReadCloser, error)) error {
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	zr, err := kgzip.NewReader(rc)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, zr)
	return err
}
