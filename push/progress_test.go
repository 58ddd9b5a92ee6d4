package push_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/modelcar/modelcar/internal/ocilayout"
	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/internal/testmodel"
	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

// eventLog records a transfer's progress events in order.
type eventLog struct {
	mu     sync.Mutex
	events []push.Event
}

func (l *eventLog) add(e push.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

// layoutBlob reads the manifest or index h from the layout dir.
func layoutBlob(t *testing.T, dir string, h v1.Hash) []byte {
	t.Helper()
	l, err := ocilayout.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.ReadBlob(h, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// imageBytes is the size of every manifest and blob under dg in the layout
// dir, each digest once: what a copy of it moves or finds there.
func imageBytes(t *testing.T, dir string, d v1.Descriptor, seen map[v1.Hash]bool) int64 {
	t.Helper()
	if seen[d.Digest] {
		return 0
	}
	seen[d.Digest] = true
	total := d.Size
	if !d.MediaType.IsIndex() && !d.MediaType.IsImage() {
		return total
	}
	b := layoutBlob(t, dir, d.Digest)
	var doc struct {
		Manifests, Layers []v1.Descriptor
		Config            *v1.Descriptor
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Config != nil {
		doc.Layers = append(doc.Layers, *doc.Config)
	}
	for _, c := range append(doc.Manifests, doc.Layers...) {
		total += imageBytes(t, dir, c, seen)
	}
	return total
}

// TestProgressTotalIsTheWholeImageFromTheStart: push and mirror announce
// the bytes of the whole image (every manifest and blob, summed from the
// source's manifests) in one Plan event before any blob moves, even one at
// a time (--jobs 1), and the Tally of their events ends at exactly that
// total whether the blobs are uploaded, skipped (all of them, or those of
// a platform image the registry already has) or mounted, and whatever the
// destination kind.
func TestProgressTotalIsTheWholeImageFromTheStart(t *testing.T) {
	reg := testenv.StartRegistry(t)
	m, err := testmodel.Generate(filepath.Join(t.TempDir(), "model"), testmodel.Options{Seed: 41, TotalSize: 3 << 20, Shards: 3})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "oci")
	p, err := push.Pack(context.Background(), m.Dir, "oci:"+dir+":v1", []pack.Option{pack.WithCacheDir(""), pack.WithPlatform("linux/amd64,linux/arm64")})
	if err != nil {
		t.Fatal(err)
	}
	want := imageBytes(t, dir, v1.Descriptor{MediaType: p.MediaType, Digest: p.Digest, Size: p.Size}, map[v1.Hash]bool{})
	var arm64, amd64 v1.Descriptor
	for _, pl := range p.Platforms {
		d := v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: pl.Digest, Size: pl.Size}
		if pl.Platform == "linux/arm64" {
			arm64 = d
		} else {
			amd64 = d
		}
	}
	transfer := func(name, src, dst string, want int64) {
		t.Helper()
		var log eventLog
		copyT(t, src, dst, push.WithJobs(1), push.WithProgress(log.add))
		if len(log.events) == 0 || !log.events[0].Plan || log.events[0].Total != want {
			t.Fatalf("%s: first event %+v, want a Plan of the whole image, %d bytes", name, log.events[:min(1, len(log.events))], want)
		}
		var tally push.Tally
		var done, total int64
		for i, e := range log.events {
			if i > 0 && e.Plan {
				t.Errorf("%s: event %d plans %d more bytes: the total grew during the transfer", name, i, e.Total)
			}
			done, total = tally.Add(e)
		}
		if done != want || total != want {
			t.Errorf("%s: the events add up to %d of %d bytes, want %d of %d", name, done, total, want, want)
		}
	}
	// One platform image first: pushing the index later finds it there.
	armOnly := strings.TrimSuffix(p.Tagged, ":v1") + "@" + arm64.Digest.String()
	transfer("push of one platform", armOnly, reg.Ref("progress/m"), imageBytes(t, dir, arm64, map[v1.Hash]bool{}))
	transfer("push of the index", p.Tagged, reg.Ref("progress/m")+":v1", want)
	transfer("push again (all skipped)", p.Tagged, reg.Ref("progress/m")+":v1", want)
	transfer("mirror to another repository (mounted)", reg.Ref("progress/m")+":v1", reg.Ref("progress/other")+":v1", want)
	transfer("mirror to a layout", reg.Ref("progress/m")+":v1", "oci:"+filepath.Join(t.TempDir(), "m"), want)
	transfer("mirror to an archive", p.Tagged, "oci-archive:"+filepath.Join(t.TempDir(), "m.tar"), want)

	// pull: the bytes of the layers it fetches, before the first is read.
	var mu sync.Mutex
	var pulled, planned int64
	calls := 0
	_, err = push.Pull(context.Background(), reg.Ref("progress/m")+":v1", filepath.Join(t.TempDir(), "pulled"), push.PullOptions{
		Total: func(n int64) {
			mu.Lock()
			defer mu.Unlock()
			if pulled != 0 {
				t.Errorf("pull: the total came after %d bytes", pulled)
			}
			planned, calls = n, calls+1
		},
		Progress: func(n int64) { mu.Lock(); pulled += n; mu.Unlock() },
	}, push.WithPlainHTTP(true), push.WithJobs(1))
	if err != nil {
		t.Fatal(err)
	}
	var mf v1.Manifest
	if err := json.Unmarshal(layoutBlob(t, dir, amd64.Digest), &mf); err != nil {
		t.Fatal(err)
	}
	var layers int64
	for _, d := range mf.Layers {
		layers += d.Size
	}
	if calls != 1 || planned != layers || pulled != layers {
		t.Errorf("pull: total %d (%d calls), %d bytes read; want the layers' %d", planned, calls, pulled, layers)
	}
}
