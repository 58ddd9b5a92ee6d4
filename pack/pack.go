package pack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/modelcar/modelcar/internal/fielderr"
)

// Result describes a packed modelcar.
type Result struct {
	// Reference pins what was written: oci:PATH@sha256:...,
	// oci-archive:FILE@sha256:... or REGISTRY/REPO@sha256:..., as push and
	// mirror report their destination.
	Reference string `json:"reference"`
	// Tagged names it by its (first) tag: oci:PATH:TAG, REGISTRY/REPO:TAG.
	Tagged string `json:"tagged,omitempty"`
	// Digest, Size and MediaType describe the image manifest.
	Digest    v1.Hash         `json:"digest"`
	Size      int64           `json:"size"`
	MediaType types.MediaType `json:"mediaType"`
	// Layers lists the model layers (base layers are not included).
	Layers []LayerResult `json:"layers"`
	// BaseLayers counts the layers that came from --base (in the first
	// platform's image when there are several).
	BaseLayers int `json:"baseLayers,omitempty"`
	// Platforms lists the image of each platform when the result is an
	// image index (more than one --platform); empty for a single image.
	Platforms []PlatformResult `json:"platforms,omitempty"`
}

// PlatformResult is one platform's image in a multi-platform index.
type PlatformResult struct {
	Platform   string  `json:"platform"`
	Digest     v1.Hash `json:"digest"`
	Size       int64   `json:"size"`
	BaseLayers int     `json:"baseLayers,omitempty"`
}

// Layer is what pack and inspect report of every layer.
type Layer struct {
	Digest    v1.Hash         `json:"digest"`
	DiffID    v1.Hash         `json:"diffID"`
	Size      int64           `json:"size"`
	MediaType types.MediaType `json:"mediaType"`
	Format    Format          `json:"format"`
}

// LayerResult describes one model layer.
type LayerResult struct {
	Layer
	Files []string `json:"files"`
	// Reused says the layer came from the digest cache without reading files.
	Reused bool `json:"reused,omitempty"`
}

// PackTo packs the model directory dir into the store open returns
// (called once the model is scanned and validated, so a bad model creates
// nothing), publishing it under tags (see Tags); reference names the
// destination in the result. Pack
// reads the model and writes blobs: it parses no reference and dials no
// registry (push.Pack opens the destination and the base for it). Nothing
// is published until the model has been scanned, validated and every blob
// stored; a failed pack aborts the store, leaving nothing that looks
// complete.
func PackTo(ctx context.Context, dir string, open func() (Store, error), reference string, tags []string, opts ...Option) (*Result, error) {
	o, err := parseOptions(opts)
	if err != nil {
		return nil, err
	}
	return packTo(ctx, dir, reference, open, tags, o)
}

// parseOptions applies opts over the defaults and checks them.
func parseOptions(opts []Option) (*options, error) {
	o := defaults()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.levelSet {
		if err := o.format.checkLevel(o.level); err != nil {
			return nil, err
		}
	}
	if err := CheckPrefetch(o.format, o.prefetch); err != nil {
		return nil, fmt.Errorf("prefetch %w", err)
	}
	return &o, nil
}

func packTo(ctx context.Context, dir, reference string, open func() (Store, error), tags []string, o *options) (*Result, error) {
	files, err := Scan(ctx, dir, o.scan)
	if err != nil {
		return nil, err
	}
	info, err := ValidateModel(ctx, files)
	if err != nil {
		return nil, err
	}
	plans := planLayers(files, info, o.prefix, o.threshold)
	for _, p := range plans {
		if n := tarSize(p.Entries); n > o.maxLayerSize {
			return nil, &InputError{File: strings.Join(p.files(), ", "),
				Err: fmt.Errorf("layer would be %d bytes, over --max-layer-size %d", n, o.maxLayerSize)}
		}
	}
	// One base per platform (nil without --base), resolved before anything
	// is written so a missing platform fails early.
	bases := make([]*baseParts, len(o.platforms))
	if o.base != nil {
		for i, pl := range o.platforms {
			img, err := o.base.Image(ctx, pl)
			if err != nil {
				return nil, fielderr.New("Base", o.base.Name, err)
			}
			if bases[i], err = loadBase(img); err != nil {
				return nil, fielderr.New("Base", o.base.Name, err)
			}
			if bp := bases[i].config.Platform(); bp != nil && !PlatformMatches(*bp, pl) {
				return nil, fielderr.New("Base", o.base.Name, fmt.Errorf("it is an image for %s, not %s; name a base index that has %s", bp, &pl, &pl))
			}
		}
	}

	store, err := open()
	if err != nil {
		return nil, err
	}
	res, manifest, err := build(ctx, store, plans, bases, o)
	if err != nil {
		store.Abort()
		return nil, err
	}
	desc := v1.Descriptor{MediaType: res.MediaType, Digest: res.Digest, Size: res.Size}
	if err := store.Publish(ctx, desc, manifest, tags); err != nil {
		store.Abort()
		return nil, err
	}
	res.Reference = reference
	return res, nil
}

// build writes every blob into l and returns the image (one platform) or
// the image index (several) with its manifest bytes, for Publish.
func build(ctx context.Context, l Store, plans []layerPlan, bases []*baseParts, o *options) (*Result, []byte, error) {
	layers, diffs, err := buildLayers(ctx, l, plans, o)
	if err != nil {
		return nil, nil, err
	}
	if len(o.platforms) == 1 {
		res, m, err := buildImage(ctx, l, plans, diffs, bases[0], o.platforms[0], o)
		if err != nil {
			return nil, nil, err
		}
		res.Layers = layers
		return &res.Result, m, nil
	}
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Annotations: o.annotations}
	res := &Result{MediaType: types.OCIImageIndex, Layers: layers}
	for i, pl := range o.platforms {
		img, m, err := buildImage(ctx, l, plans, diffs, bases[i], pl, o)
		if err != nil {
			return nil, nil, err
		}
		desc := v1.Descriptor{MediaType: img.MediaType, Digest: img.Digest, Size: img.Size, Platform: img.platform}
		if err := l.PutManifest(ctx, desc, m); err != nil {
			return nil, nil, err
		}
		idx.Manifests = append(idx.Manifests, desc)
		res.Platforms = append(res.Platforms, PlatformResult{Platform: img.platform.String(), Digest: img.Digest, Size: img.Size, BaseLayers: img.BaseLayers})
		if i == 0 {
			res.BaseLayers = img.BaseLayers
		}
	}
	b, dg, err := marshalDigest(idx)
	if err != nil {
		return nil, nil, err
	}
	res.Digest, res.Size = dg, int64(len(b))
	return res, b, nil
}

// buildLayers builds every model layer into l, largest first on o.jobs
// workers, and returns them in plan order.
func buildLayers(ctx context.Context, l Store, plans []layerPlan, o *options) ([]LayerResult, []builtLayer, error) {
	var cache *layerCache
	if o.cacheDir != "" {
		cache = &layerCache{dir: o.cacheDir}
	}
	layers := make([]LayerResult, len(plans))
	diffs := make([]builtLayer, len(plans))

	// Largest first keeps every worker busy until the end.
	order := make([]int, len(plans))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return plans[order[a]].bytes() > plans[order[b]].bytes() })

	var total int64
	for _, p := range plans {
		total += p.bytes()
	}
	o.progress(ProgressEvent{Plan: true, Layer: -1, Total: total})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan int)
	)
	for w := 0; w < min(o.jobs, len(plans)); w++ {
		wg.Go(func() {
			for i := range next {
				bl, reused, err := buildOne(ctx, l, i, plans[i], o, cache)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					continue
				}
				diffs[i] = bl
				layers[i] = LayerResult{Layer: Layer{Digest: bl.Desc.Digest, DiffID: bl.DiffID, Size: bl.Desc.Size,
					MediaType: bl.Desc.MediaType, Format: o.format}, Files: plans[i].files(), Reused: reused}
			}
		})
	}
feed:
	for _, i := range order {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return layers, diffs, nil
}

// builtImage is one platform's image: its manifest descriptor and the
// platform its config records.
type builtImage struct {
	Result
	platform *v1.Platform
}

// buildImage stores the config of one platform's image (model layers on
// base, when there is one) and returns its manifest, not yet stored.
func buildImage(ctx context.Context, l Store, plans []layerPlan, diffs []builtLayer, base *baseParts, platform v1.Platform, o *options) (*builtImage, []byte, error) {
	var (
		cfg       *v1.ConfigFile
		layerDesc []v1.Descriptor
	)
	if base != nil {
		if err := copyBaseBlobs(ctx, base, l); err != nil {
			return nil, nil, err
		}
		cfg = base.config
		layerDesc = append(layerDesc, base.layers...)
	} else {
		cfg = &v1.ConfigFile{
			Architecture: platform.Architecture,
			OS:           platform.OS,
			Variant:      platform.Variant,
			RootFS:       v1.RootFS{Type: "layers"},
		}
	}
	cfg.Created = v1.Time{Time: o.epoch}
	for i, b := range diffs {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, b.DiffID)
		cfg.History = append(cfg.History, v1.History{
			Created:   v1.Time{Time: o.epoch},
			CreatedBy: "modelcar pack: " + historyFiles(plans[i].files()),
			Comment:   "model files under " + o.prefix,
		})
		d := b.Desc
		if d.Annotations == nil {
			d.Annotations = map[string]string{}
		}
		d.Annotations[AnnotationTitle] = Title(plans[i].files())
		layerDesc = append(layerDesc, d)
	}
	cfgBytes, cfgDigest, err := marshalDigest(cfg)
	if err != nil {
		return nil, nil, err
	}
	if err := l.PutBlob(ctx, cfgDigest, int64(len(cfgBytes)), bytes.NewReader(cfgBytes)); err != nil {
		return nil, nil, err
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: cfgDigest, Size: int64(len(cfgBytes))},
		Layers:        layerDesc,
		Annotations:   o.annotations,
	}
	mBytes, mDigest, err := marshalDigest(m)
	if err != nil {
		return nil, nil, err
	}
	res := &builtImage{Result: Result{Digest: mDigest, Size: int64(len(mBytes)), MediaType: m.MediaType}, platform: cfg.Platform()}
	if res.platform == nil {
		res.platform = &platform
	}
	if base != nil {
		res.BaseLayers = len(base.layers)
	}
	return res, mBytes, nil
}

// marshalDigest encodes v as JSON and returns the bytes and their digest.
func marshalDigest(v any) ([]byte, v1.Hash, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	h, _, err := v1.SHA256(bytes.NewReader(b))
	return b, h, err
}

func historyFiles(files []string) string {
	if len(files) <= 3 {
		return strings.Join(files, ", ")
	}
	return fmt.Sprintf("%s and %d more files", strings.Join(files[:3], ", "), len(files)-3)
}

// buildOne builds plan i into l, or reuses it from the digest cache when the
// layout already holds the blob.
func buildOne(ctx context.Context, l Store, i int, p layerPlan, o *options, cache *layerCache) (builtLayer, bool, error) {
	var prioritized []string
	if (p.Small || o.prefetch == PrefetchAll) && o.format.lazy() {
		for _, e := range p.Entries {
			prioritized = append(prioritized, e.Name)
		}
	}
	ev := ProgressEvent{Layer: i, Files: p.files(), Total: p.bytes()}
	start := ev
	start.Start = true
	o.progress(start)
	level := o.level
	if !o.levelSet {
		level = o.format.defaultLevel(p.Small)
	}
	key := newCacheKey(p, o.format, level, o.epoch.Unix(), prioritized)
	if v, ok := cache.get(key); ok && l.Has(ctx, v.Desc.Digest, v.Desc.Size) {
		done := ev
		done.Done, done.Reused = true, true
		o.progress(done)
		return builtLayer{Desc: v.Desc, DiffID: v.DiffID}, true, nil
	}
	// A store failure (a dropped upload) rebuilds the layer from the files:
	// the bytes are the same every time.
	var (
		bl  builtLayer
		err error
	)
	for attempt := 1; ; attempt++ {
		bl, err = buildLayerOnce(ctx, l, i, p, level, prioritized, o, ev)
		var ie *InputError
		if err == nil || attempt == storeAttempts || errors.As(err, &ie) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return builtLayer{}, false, err
	}
	cache.put(key, cacheValue{Desc: bl.Desc, DiffID: bl.DiffID})
	done := ev
	done.Done = true
	o.progress(done)
	return bl, false, nil
}

// storeAttempts bounds how often one layer is rebuilt after store failures.
const storeAttempts = 3

// buildLayerOnce encodes plan p into a new blob of l and commits it.
func buildLayerOnce(ctx context.Context, l Store, i int, p layerPlan, level int, prioritized []string, o *options, ev ProgressEvent) (builtLayer, error) {
	ts, err := newTarStream(p.Entries, o.epoch)
	if err != nil {
		return builtLayer{}, err
	}
	if err := ts.open(); err != nil {
		return builtLayer{}, err
	}
	defer ts.close()
	w, err := l.NewBlob(ctx)
	if err != nil {
		return builtLayer{}, err
	}
	if pa, ok := w.(preallocator); ok && o.format == FormatTar {
		pa.Preallocate(ts.size) // a tar layer's size is known before it is written
	}
	bl, err := encodeLayer(ctx, ts, o.format, level, prioritized, w, func(n int64) {
		if n > 0 {
			e := ev
			e.Read = n
			o.progress(e)
		}
	})
	if err != nil {
		w.Abort()
		var ie *InputError
		if errors.As(err, &ie) || errors.Is(err, context.Canceled) {
			return builtLayer{}, err
		}
		return builtLayer{}, fmt.Errorf("layer %d (%s): %w", i, historyFiles(p.files()), err)
	}
	if bl.Desc.Size > o.maxLayerSize {
		w.Abort()
		return builtLayer{}, &InputError{File: strings.Join(p.files(), ", "),
			Err: fmt.Errorf("%s layer is %d bytes, over --max-layer-size %d", o.format, bl.Desc.Size, o.maxLayerSize)}
	}
	if err := w.Commit(ctx, bl.Desc.Digest); err != nil {
		return builtLayer{}, fmt.Errorf("layer %d (%s): storing: %w", i, historyFiles(p.files()), err)
	}
	return bl, nil
}
