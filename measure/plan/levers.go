package plan

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/modelcar/modelcar/measure"
)

// modelPull is the model image's share of the pull phase.
type modelPull struct {
	n         int     // cold starts that pulled a model image
	seconds   float64 // p50 of the model images' pull time per cold start
	exclusive float64 // p50 of the pull time only model images account for
	bytes     int64   // largest bytes per cold start
	mbps      float64 // bytes over seconds, all cold starts together (0: unknown)
	before    float64 // p50 of vLLM's "before weights" step
	names     []string
}

func (c *calc) modelPull() modelPull {
	var mp modelPull
	var totalBytes int64
	var totalSecs float64
	var secs, excl []float64
	for i := range c.rep.ColdStarts {
		cs := &c.rep.ColdStarts[i]
		var s float64
		var bytes int64
		var model bool
		var others []interval
		for _, ip := range cs.Details.Images {
			if ip.Cached {
				continue
			}
			if c.roleOf(ip.Image) != "model" {
				others = append(others, interval{ip.Start, ip.End})
				continue
			}
			model = true
			s += pullSeconds(ip)
			bytes += ip.Bytes
			if !slices.Contains(mp.names, ip.Image) {
				mp.names = append(mp.names, ip.Image)
			}
		}
		if !model {
			continue
		}
		var pulls []interval
		for _, seg := range cs.Timeline {
			if seg.Phase == measure.Pull {
				pulls = append(pulls, interval{seg.Start, seg.End})
			}
		}
		secs = append(secs, s)
		excl = append(excl, max(0, cs.Phases.Pull-overlap(pulls, others)))
		mp.bytes = max(mp.bytes, bytes)
		if bytes > 0 && s > 0 {
			totalBytes += bytes
			totalSecs += s
		}
	}
	mp.n, mp.seconds, mp.exclusive = len(secs), median(secs), median(excl)
	if totalSecs > 0 {
		mp.mbps = float64(totalBytes) / totalSecs / 1e6
	}
	mp.before, _ = c.p50(func(cs *measure.ColdStart) (float64, bool) {
		st, ok := step(&cs.Details.Load, "before weights (imports, engine setup)")
		return st.Seconds, ok
	})
	return mp
}

func (mp modelPull) describe() string {
	s := fmt.Sprintf("model image %s pulled in %s s", strings.Join(mp.names, ", "), fsec(mp.seconds))
	if mp.mbps > 0 {
		s += fmt.Sprintf(" (%.1f GB, %.0f MB/s)", float64(mp.bytes)/1e9, mp.mbps)
	}
	return s
}

// noModelImage is the lever for a report without a model image pull: no
// gain when the model image was cached; unknown when --image names an
// image the report does not have (see the plan's warning).
func (c *calc) noModelImage(l Lever) Lever {
	l.Estimate, l.Confidence = Measured, High
	switch {
	case c.o.Image == "":
		l.Arithmetic = "no model image was pulled in these cold starts (it was cached, or the weights are not in an image of their own: pass --image to name it)"
	case c.matched:
		l.Arithmetic = fmt.Sprintf("the model image (%s) was on the node already in these cold starts: no pull to shorten", repository(c.o.Image))
	default:
		l.Estimate = Unknown
		l.Arithmetic = fmt.Sprintf("--image's repository %s is in none of these cold starts, and they pulled no other image but the serving container's: the model image's pull was not measured", repository(c.o.Image))
		l.Needs = []string{"a cold start that pulls --image (measure one once it is deployed)"}
	}
	return l
}

func (c *calc) warmPool() Lever {
	l := Lever{Name: LeverWarmPool, Title: "warm GPU node pool (modelcar warm pool)", Phase: measure.Provision, Estimate: Measured,
		Conditions: []string{
			"a placeholder node is free when the pod arrives: pool replicas at least the pods that start at once",
			"the placeholders keep GPU nodes up, and billed, while idle",
		},
		Apply: []string{fmt.Sprintf("modelcar warm pool --replicas %d --gpus-per-pod %d%s --apply (pool.yaml with --emit)",
			max(1, c.o.PoolReplicas), max(1, c.facts.GPUsPerNode), warmFlags(c.o))}}
	prov := c.p.Basis.Phases.Provision
	if c.known(measure.Provision) == 0 {
		l.Estimate, l.Arithmetic = Unknown, "provision is unknown: the report has no scheduling time"
		l.Needs = []string{"a report that attributes provision (the pod's Scheduled event or PodScheduled condition)"}
		return l
	}
	var example *measure.ColdStart
	save, n := c.p50(func(cs *measure.ColdStart) (float64, bool) {
		if cs.Details.ScaleUp == nil {
			return 0, false
		}
		if example == nil {
			example = cs
		}
		sched, _ := step(&cs.Details.Provision, "scheduling")
		return cs.Phases.Provision - sched.Seconds, true
	})
	if n == 0 {
		for i := range c.rep.ColdStarts {
			for _, note := range c.rep.ColdStarts[i].Details.Notes {
				if strings.HasPrefix(note, "FailedScheduling") {
					l.SavingSeconds, l.Confidence = prov, Low
					l.Arithmetic = fmt.Sprintf("%s and no new node recorded, but the pod waited (%s): if it waited for GPU capacity, a warm GPU node saves up to %s s",
						c.of("provision", prov), note, fsec(prov))
					return l
				}
			}
		}
		l.Confidence = High
		l.Arithmetic = c.of("provision", prov) + ", no new node and no FailedScheduling: the pod found a GPU at once"
		return l
	}
	if c.facts.GPUNodeWarmPool != nil && *c.facts.GPUNodeWarmPool {
		l.Conditions = append(l.Conditions, "a modelcar pool runs already (facts): these cold starts waited for a node anyway; raise its replicas, or check that its node selector matches these pods' nodes")
	}
	var parts []string
	for _, st := range example.Details.Provision.Steps {
		if st.Name != "scheduling" {
			parts = append(parts, fmt.Sprintf("%s %s s", st.Name, fsec(st.Seconds)))
		}
	}
	if n > 1 {
		parts[0] = example.Pod + ": " + parts[0]
	}
	l.SavingSeconds, l.Confidence = save, Medium
	if n == len(c.rep.ColdStarts) {
		l.Confidence = High
	}
	l.Arithmetic = fmt.Sprintf("%s: the new node took %s s%s (%s); on a warm GPU node only scheduling is left: saves up to %s s",
		c.of("provision", prov), fsec(save), c.which(n, "waited for a new node"), strings.Join(parts, " + "), fsec(save))
	return l
}

// prepullMode is the pre-pull mode the facts allow.
func (c *calc) prepullMode() string {
	if c.facts.ImageVolumes != nil && !*c.facts.ImageVolumes {
		return "init-container"
	}
	return "image-volume"
}

func (c *calc) prepull() Lever {
	l := Lever{Name: LeverPrepull, Title: "pre-pull DaemonSet (modelcar warm prepull)", Phase: measure.Pull, Estimate: Measured,
		Conditions: []string{"the pod lands on a node that was up before it (a warm-pool node, or one the DaemonSet reached)"}}
	pull := c.p.Basis.Phases.Pull
	if c.known(measure.Pull) == 0 {
		l.Estimate, l.Arithmetic = Unknown, "pull is unknown: the report has no Pulled events"
		l.Needs = []string{"a report with the kubelet's Pulled events (record the bundle within the hour)"}
		return l
	}
	var imgs []string
	var bytes int64
	for _, im := range c.p.Images {
		if im.Pulled == 0 {
			continue
		}
		s := fmt.Sprintf("%s %s s", im.Image, fsec(im.Seconds))
		if im.Bytes > 0 {
			s += fmt.Sprintf(", %.1f GB", float64(im.Bytes)/1e9)
		}
		imgs = append(imgs, s)
		bytes += im.Bytes
	}
	// The commands make the DaemonSets prepull.yaml holds (the modelcar,
	// when pinned, in place of the report's model images), then one per
	// unpinned image, to pin first.
	modelcar := ""
	if isDigest(c.o.Image) {
		modelcar = c.o.Image
	}
	set := prepullImages(c.p.Images, modelcar)
	for i, img := range set.images {
		name := ""
		if set.names[i] != "" {
			name = " --name " + set.names[i]
		}
		l.Apply = append(l.Apply, fmt.Sprintf("modelcar warm prepull --image %s%s --mode %s%s --apply", img, name, c.prepullMode(), warmFlags(c.o)))
	}
	for _, u := range set.unpinned {
		l.Apply = append(l.Apply, fmt.Sprintf("modelcar warm prepull --image %s@sha256:<digest of %s> --mode %s%s --apply", untagged(u), u, c.prepullMode(), warmFlags(c.o)))
	}
	l.Apply = append(l.Apply, "prepull.yaml with --emit (the pinned images)")
	l.SavingSeconds, l.Confidence = pull, High
	if len(imgs) == 0 {
		l.Arithmetic = c.of("pull", pull) + ": every image was on the node already"
		return l
	}
	l.Arithmetic = fmt.Sprintf("%s (%s): with the images on the node before the pod, the pull phase goes: a pre-pull DaemonSet saves up to %s s on warm nodes",
		c.of("pull", pull), strings.Join(imgs, "; "), fsec(pull))
	newNodes := 0
	for i := range c.rep.ColdStarts {
		if c.rep.ColdStarts[i].Details.ScaleUp != nil {
			newNodes++
		}
	}
	if newNodes > 0 {
		l.Confidence = Medium
		l.Conditions = append(l.Conditions, fmt.Sprintf("%d of %d cold starts landed on a new node, where the DaemonSet pulls at the same time as the pod: pair it with warm-pool", newNodes, len(c.rep.ColdStarts)))
	}
	if c.facts.ImageVolumes == nil {
		l.Conditions = append(l.Conditions, "image-volume mode needs image volumes (unknown here); else --mode init-container, with a shell in the image (modelcar pack --base)")
	}
	if c.facts.Prepull != nil && *c.facts.Prepull {
		l.Conditions = append(l.Conditions, "a modelcar pre-pull runs already (facts): these cold starts pulled anyway, on nodes it had not reached or for images it does not pull")
	}
	if gib := float64(bytes) / (1 << 30); c.facts.NodeImageCacheGiB > 0 && gib > c.facts.NodeImageCacheGiB {
		l.Needs = append(l.Needs, fmt.Sprintf("room for the images on the nodes: %.1f GiB > nodeImageCacheGiB %g (the kubelet's image GC would evict them)", gib, c.facts.NodeImageCacheGiB))
	}
	return l
}

// baseFormat is the model image's current format: given, or guessed from
// its pull rate. ok is false when it cannot be told (why says so, "" when
// no size is known).
func (c *calc) baseFormat(mp modelPull) (format, how string, ok bool) {
	if c.o.CurrentFormat != "" {
		return c.o.CurrentFormat, "--current-format " + c.o.CurrentFormat, true
	}
	switch {
	case mp.mbps == 0:
		return "", "", false
	case mp.mbps <= DefaultSingleStreamMBps:
		return "gzip-single", fmt.Sprintf("at %.0f MB/s, no faster than one gzip stream decompresses (%.0f MB/s, default): taken for a single gzip layer", mp.mbps, DefaultSingleStreamMBps), true
	}
	return "", fmt.Sprintf("at %.0f MB/s, faster than one gzip stream decompresses (%.0f MB/s, default): not bound by a single compressed layer", mp.mbps, DefaultSingleStreamMBps), false
}

func (c *calc) repackTar(mp modelPull) Lever {
	l := Lever{Name: LeverRepackTar, Title: "repack as uncompressed per-file layers (modelcar pack --format tar)", Phase: measure.Pull,
		Conditions: []string{
			"a link faster than one core's gunzip: tar sends the uncompressed bytes (bf16 weights gzip to about 0.78)",
			"node disk for the uncompressed layers",
		},
		Apply: []string{"modelcar pack MODEL_DIR --format tar --output REGISTRY/REPO:TAG (pack-flags.txt with --emit)"}}
	if mp.n == 0 {
		return c.noModelImage(l)
	}
	base, how, ok := c.baseFormat(mp)
	switch {
	case !ok && how == "":
		l.Estimate, l.Arithmetic = Unknown, mp.describe()+": its size is unknown, so its format cannot be told"
		l.Needs = []string{"the model image's format: --current-format (the kubelet's Pulled events gave no image size)"}
		return l
	case !ok:
		l.Estimate, l.Confidence = Default, Low
		l.Arithmetic = fmt.Sprintf("%s, %s: repacking would not shorten it (pass --current-format if it is one gzip layer)", mp.describe(), how)
		return l
	case base == "tar":
		l.Estimate, l.Confidence = Measured, High
		l.Arithmetic = mp.describe() + ": it is tar layers already (" + how + ")"
		return l
	}
	r, ok := c.o.Bench.tarRatio(base)
	if !ok {
		l.Estimate, l.Arithmetic = Unknown, fmt.Sprintf("%s, %s: no default ratio of tar to %s", mp.describe(), how, base)
		l.Needs = []string{fmt.Sprintf("--bench results with tar and %s runs", base)}
		return l
	}
	l.Estimate, l.Confidence = Default, Low
	if r.measured {
		l.Estimate, l.Confidence = Benched, Medium
	}
	if r.v >= 1 {
		l.Arithmetic = fmt.Sprintf("%s, %s; tar takes %.2f× its time (%s): no saving", mp.describe(), how, r.v, r.source)
		return l
	}
	l.SavingSeconds = min(mp.seconds*(1-r.v), mp.exclusive)
	l.Arithmetic = fmt.Sprintf("%s%s, %s; tar layers take %.2f× its time (%s): %s × (1 - %.2f) = saves up to %s s",
		mp.describe(), c.which(mp.n, "pulled it"), how, r.v, r.source, fsec(mp.seconds), r.v, fsec(l.SavingSeconds))
	if l.SavingSeconds < mp.seconds*(1-r.v) {
		l.Arithmetic += fmt.Sprintf(" (capped at the %s s of the pull phase no other image overlaps)", fsec(mp.exclusive))
	}
	// The benchmark's ratio holds on its own link. Tar sends the weights
	// uncompressed: on a node whose link (linkMbit) is slow enough, sending
	// the larger image takes longer than the gzip image's whole pull did.
	if c.facts.LinkMbit > 0 && mp.bytes > 0 {
		tarBytes := float64(mp.bytes) / DefaultGzipRatio
		floor := tarBytes / (c.facts.LinkMbit * 1e6 / 8)
		if byLink := mp.seconds - floor; byLink < l.SavingSeconds {
			l.SavingSeconds = max(0, byLink)
			l.Arithmetic += fmt.Sprintf("; but over the node's %g Mbit/s link (facts) the tar image's %.1f GB (%.1f GB / %.2f, gzip's share for bf16 weights, default) take %s s to send alone, against the %s s pull: saves at most %s s",
				c.facts.LinkMbit, tarBytes/1e9, float64(mp.bytes)/1e9, DefaultGzipRatio, fsec(floor), fsec(mp.seconds), fsec(l.SavingSeconds))
		}
	}
	return l
}

func (c *calc) lazyPull(mp modelPull) Lever {
	l := Lever{Name: LeverLazyPull, Title: "lazy pulling (modelcar pack --format zstd-chunked --prefetch all)", Phase: measure.Pull,
		Conditions: []string{
			"the weights are fetched from the registry while vLLM loads them: keep the registry near the nodes (a mirror in the region)",
			"the small files (config, tokenizer) are prefetched first: modelcar puts them before the prefetch landmark",
		}}
	if mp.n == 0 {
		return c.noModelImage(l)
	}
	lazyFmt, why := c.facts.lazyRuntime()
	target := cmp.Or(lazyFmt, "zstd-chunked")
	l.Apply = []string{fmt.Sprintf("modelcar pack MODEL_DIR --format %s --prefetch all --output REGISTRY/REPO:TAG (pack-flags.txt with --emit)", target),
		"stargz-snapshotter config.toml on the GPU nodes: prefetch_async_size = 1048576 (the weights stream in at mount without holding the container start)"}
	if why != "" {
		l.Needs = []string{why}
	}
	base, how, ok := c.baseFormat(mp)
	if !ok {
		base, how = "tar", "its format unknown, compared with tar (the fastest full pull)"
	}
	if base == target && why == "" {
		l.Estimate, l.Confidence = Measured, High
		l.Arithmetic = fmt.Sprintf("%s: it is %s on nodes with the stargz snapshotter already (%s)", mp.describe(), target, how)
		return l
	}
	first, all := c.o.Bench.lazyRatios(target, base)
	l.Estimate, l.Confidence = Default, Low
	if first.measured {
		l.Estimate, l.Confidence = Benched, Medium
	}
	p, b := mp.seconds, mp.before
	firstAt, allAt := p*first.v, p*all.v
	l.FirstReadSavingSeconds = min(p-firstAt, mp.exclusive)
	l.SavingSeconds = min(p+b-max(firstAt+b, allAt), mp.exclusive)
	l.Arithmetic = fmt.Sprintf("%s%s, %s; lazily pulled as %s (%s) the first file is readable after %s s (%.3f×): %s s sooner at first read; "+
		"all weights are read after %s s (%.2f×), overlapping vLLM's %s s of imports and engine setup: (%s + %s) - max(%s + %s, %s) = Ready up to %s s sooner",
		mp.describe(), c.which(mp.n, "pulled it"), how, target, first.source, fsec(firstAt), first.v, fsec(l.FirstReadSavingSeconds),
		fsec(allAt), all.v, fsec(b), fsec(p), fsec(b), fsec(firstAt), fsec(b), fsec(allAt), fsec(max(0, l.SavingSeconds)))
	return l
}

func (c *calc) imageVolume() Lever {
	l := Lever{Name: LeverImageVolume, Title: "Kubernetes image volume for the model (chart model.delivery: imageVolume)", Phase: measure.Unattributed,
		Estimate: Measured, Confidence: Medium,
		Conditions: []string{"the init-container time is a copy of the model (initCopy delivery), which an image volume mounts instead"},
		Apply:      []string{"values.yaml: model.delivery: imageVolume"}}
	save, _ := c.p50(func(cs *measure.ColdStart) (float64, bool) {
		var s float64
		for _, seg := range cs.Timeline {
			if seg.Phase == measure.Unattributed && strings.HasSuffix(seg.Note, ": container start, init containers") {
				s += seg.End - seg.Start
			}
		}
		return s, true
	})
	l.SavingSeconds = save
	l.Arithmetic = fmt.Sprintf("init containers ran %s s between the pulls and the server's start%s: an image volume needs no copy: saves up to %s s",
		fsec(save), c.which(len(c.rep.ColdStarts), ""), fsec(save))
	if save < measure.MinRegressionSeconds {
		l.Arithmetic = fmt.Sprintf("init containers ran %s s between the pulls and the server's start: no copy to remove (image volumes also let the pre-pull run without a shell in the image)", fsec(save))
		return l
	}
	switch iv := c.facts.ImageVolumes; {
	case iv == nil:
		l.Needs = []string{"image volumes: unknown (kubernetesVersion unknown, or 1.31-1.34 where the ImageVolume feature gate decides): --fact imageVolumes=true"}
	case !*iv:
		l.Needs = []string{"image volumes: Kubernetes 1.35+, or the ImageVolume feature gate on 1.31-1.34 (facts: off)"}
		l.Conditions = append(l.Conditions, "without image volumes: model.delivery: modelcar (the KServe-style sidecar, no copy; the image needs a shell: modelcar pack --base)")
	}
	return l
}

func (c *calc) streamingLoad() Lever {
	l := Lever{Name: LeverStreamingLoad, Title: "stream the weights (vllm --load-format runai_streamer)", Phase: measure.Load,
		Estimate: Default, Confidence: Low,
		Conditions: []string{
			"the weights are on a local disk or an image volume, read with concurrent streams",
			fmt.Sprintf("the node streams %.1f GiB/s (default, not measured)", DefaultStreamingGiBps),
		},
		Apply: []string{"values.yaml: vllm.loadFormat: runai_streamer"}}
	if c.known(measure.Load) == 0 {
		l.Estimate, l.Arithmetic = Unknown, "load is unknown: no vLLM log with its loading lines"
		l.Needs = []string{"the vLLM log (logs/NS_POD_CONTAINER.log, with --timestamps)"}
		return l
	}
	v, n := c.p50Each(2, func(cs *measure.ColdStart) ([]float64, bool) {
		var s, g float64
		for _, st := range cs.Details.Load.Steps {
			if st.Name == "loading weights" || st.Name == "model loading" {
				s = max(s, st.Seconds)
			}
			g = max(g, st.GiB)
		}
		return []float64{s, g}, s > 0 && g > 0
	})
	if n == 0 {
		l.Estimate, l.Arithmetic = Unknown, "the vLLM log states no weight size and loading time together"
		l.Needs = []string{"a vLLM log with \"Loading weights took S seconds\" and \"Model loading took G GiB\" (vLLM 0.6+)"}
		return l
	}
	secs, gib := v[0], v[1]
	stream := gib / DefaultStreamingGiBps
	l.SavingSeconds = secs - stream
	l.Arithmetic = fmt.Sprintf("%s: weights %.1f GiB loaded in %s s (%.2f GiB/s)%s; at %.1f GiB/s they take %s s: %s - %s = saves up to %s s",
		c.of("load", c.p.Basis.Phases.Load), gib, fsec(secs), gib/secs, c.which(n, "logged both"), DefaultStreamingGiBps, fsec(stream), fsec(secs), fsec(stream), fsec(l.SavingSeconds))
	if l.SavingSeconds < measure.MinRegressionSeconds {
		l.Arithmetic = fmt.Sprintf("%s: weights %.1f GiB loaded in %s s (%.2f GiB/s)%s, within a second of the %.1f GiB/s a streaming loader is assumed to reach",
			c.of("load", c.p.Basis.Phases.Load), gib, fsec(secs), gib/secs, c.which(n, "logged both"), DefaultStreamingGiBps)
	}
	return l
}

func (c *calc) warmupUnknown(l Lever) (Lever, bool) {
	if c.known(measure.Warmup) > 0 {
		return l, false
	}
	l.Estimate, l.Arithmetic = Unknown, "warmup is unknown: no vLLM log after the weights loaded"
	l.Needs = []string{"the vLLM log (logs/NS_POD_CONTAINER.log, with --timestamps)"}
	return l, true
}

func (c *calc) compileCache() Lever {
	l := Lever{Name: LeverCompileCache, Title: "keep vLLM's compile cache (VLLM_CACHE_ROOT on a persistent volume)", Phase: measure.Warmup,
		Estimate: Measured, Confidence: Medium,
		Conditions: []string{"the cache volume outlives the pod and matches the model, vLLM version and compile settings"},
		Apply:      []string{"vllm.env VLLM_CACHE_ROOT=/cache/vllm with a persistent volume mounted at /cache (the chart has no value for the volume yet)"}}
	if l, unknown := c.warmupUnknown(l); unknown {
		return l
	}
	hit, hits := c.p50(func(cs *measure.ColdStart) (float64, bool) {
		st, ok := step(&cs.Details.Warmup, "compile cache")
		return st.Seconds, ok
	})
	v, n := c.p50Each(2, func(cs *measure.ColdStart) ([]float64, bool) {
		tc, ok := step(&cs.Details.Warmup, "torch.compile")
		dyn, _ := step(&cs.Details.Warmup, "dynamo transform")
		return []float64{tc.Seconds, dyn.Seconds}, ok
	})
	switch {
	case hits > 0:
		l.Arithmetic = fmt.Sprintf("%d of %d cold starts loaded the compiled graphs from the cache already (%s s%s)",
			hits, len(c.rep.ColdStarts), fsec(hit), c.which(hits, "did"))
	case n == 0:
		l.Arithmetic = "no torch.compile in the logs (vLLM V0, or --enforce-eager): nothing to cache"
	default:
		l.SavingSeconds = v[0] - v[1]
		l.Arithmetic = fmt.Sprintf("%s: torch.compile %s s%s, less the dynamo transform (%s s), which still runs on a cache hit: %s - %s = saves up to %s s",
			c.of("warmup", c.p.Basis.Phases.Warmup), fsec(v[0]), c.which(n, "compiled"), fsec(v[1]), fsec(v[0]), fsec(v[1]), fsec(l.SavingSeconds))
	}
	return l
}

func (c *calc) readinessProbe() Lever {
	l := Lever{Name: LeverReadinessProbe, Title: "a 1 s readiness probe period", Phase: measure.Warmup, Estimate: Measured, Confidence: High,
		Apply: []string{"values.yaml: vllm.readinessProbe.periodSeconds: 1"}}
	if l, unknown := c.warmupUnknown(l); unknown {
		return l
	}
	v, n := c.p50Each(2, func(cs *measure.ColdStart) ([]float64, bool) {
		lag, ok := step(&cs.Details.Warmup, "readiness lag")
		probe, _ := step(&cs.Details.Warmup, "warm-up probe")
		return []float64{lag.Seconds, probe.Seconds}, ok
	})
	if n == 0 {
		l.Arithmetic = "no readiness lag in the report (no \"Application startup complete\" line, or never Ready)"
		return l
	}
	l.SavingSeconds = v[0] - v[1] - 1
	probe, minus := "", ""
	if v[1] > 0 {
		probe, minus = fmt.Sprintf(", less the warm-up probe's work %s s", fsec(v[1])), " - "+fsec(v[1])
	}
	l.Arithmetic = fmt.Sprintf("readiness lag (API server up → Ready) %s s%s%s, less the 1 s a 1 s period leaves: %s%s - 1 = saves up to %s s",
		fsec(v[0]), c.which(n, "logged it"), probe, fsec(v[0]), minus, fsec(max(0, l.SavingSeconds)))
	return l
}

func (c *calc) warmupProbe() Lever {
	l := Lever{Name: LeverWarmupProbe, Title: "warm-up probe, so Ready means warmed (modelcar warm probe)", Phase: measure.Warmup,
		Estimate: Measured, Confidence: High, Apply: []string{"values.yaml: warmProbe.enabled: true (the chart's default)"}}
	if l, unknown := c.warmupUnknown(l); unknown {
		return l
	}
	probe, n := c.p50(func(cs *measure.ColdStart) (float64, bool) {
		st, ok := step(&cs.Details.Warmup, "warm-up probe")
		return st.Seconds, ok
	})
	if n > 0 {
		l.Arithmetic = fmt.Sprintf("the warm-up probe runs already (%s s%s): Ready means warmed", fsec(probe), c.which(n, "logged it"))
		return l
	}
	l.Status = Advice
	l.Arithmetic = "no warm-up probe line in the logs: the pod was Ready before any request warmed vLLM, so the first requests pay for what is left; the probe moves that before Ready (it adds its warm-up to Ready, and saves it on the first requests)"
	return l
}

// packFlags picks the pack format: the pull lever with the larger saving
// among repack-tar and lazy-pull that apply, else tar (the default).
func (c *calc) packFlags() PackFlags {
	best := PackFlags{Flags: []string{"--format", "tar"}, Why: "the default: no pack lever applies"}
	bestSave := 0.0
	for _, l := range c.p.Levers {
		if l.Status != Apply || (l.Name != LeverRepackTar && l.Name != LeverLazyPull) || l.SavingSeconds <= bestSave {
			continue
		}
		bestSave = l.SavingSeconds
		flags := []string{"--format", "tar"}
		if l.Name == LeverLazyPull {
			f, _ := c.facts.lazyRuntime()
			flags = []string{"--format", f, "--prefetch", "all"}
		}
		best = PackFlags{Flags: flags, Why: fmt.Sprintf("%s saves up to %s s", l.Name, fsec(l.SavingSeconds))}
	}
	if c.facts.ImageVolumes != nil && !*c.facts.ImageVolumes {
		best.Why += "; no image volumes: add --base IMAGE_WITH_A_SHELL (e.g. --base oci:./busybox), which the init-container pre-pull and the modelcar sidecar need"
	}
	return best
}
