// Package plan is the cold-start optimizer behind `modelcar plan`: from a
// cold-start report (measure.Report, schema version 1) and what is known of
// the cluster, it ranks the levers that shorten a cold start by the time
// each can save, shows the arithmetic behind every number, and writes the
// objects that apply them.
//
// It owns the plan (Compute, Plan, Lever), the cluster facts (Facts: read
// from a file by ReadFacts, set one by one by SetFact, learned live by
// Discover), the node-side benchmark's results it can use (Bench, ReadBench:
// the JSON of tools/coldstart, refused unless it has version 1, link_mbit,
// model_bytes and results of a format plan uses), the plan's renderings (Render: text, md,
// json) and the files to apply (Emit: prepull.yaml and pool.yaml rendered by
// package warm, values.yaml for the vllm-modelcar chart, pack-flags.txt).
//
// # Basis
//
// Phase values are the report's p50 (summary.phases[].p50) with two or more
// cold starts, else the single cold start's. Quantities a lever reads from
// the details (the new node's steps, the model image's pull, the load and
// warm-up steps) are taken per cold start and their p50 is used, over the
// cold starts where the lever applies (the plan says how many that is).
//
// # Levers
//
// Every saving is an upper bound ("up to") on the time to Ready, with the
// arithmetic as text, the conditions under which it holds, a confidence
// (high: the report measured the time the lever removes; medium: measured,
// but the lever removes only part of it or needs the benchmark's ratios;
// low: a documented default, not measured) and what to apply.
//
//   - warm-pool (provision): a new node's time (provision less the final
//     scheduling step) goes when a placeholder node is free: `modelcar warm
//     pool`. Without a recorded scale-up but with a FailedScheduling note,
//     the whole provision phase, at low confidence; else no gain.
//   - prepull (pull): the whole pull phase, on nodes that are up before the
//     pod (warm nodes; medium confidence when the report's pods landed on new
//     nodes): `modelcar warm prepull` for every image pulled. Needs the
//     images to fit nodeImageCacheGiB when that is known.
//   - repack-tar (pull): the model image's pull times (1 - tar/base), capped
//     at the pull time no other image overlaps. base is its current format
//     (Options.CurrentFormat), else a single gzip stream when it pulled no
//     faster than DefaultSingleStreamMBps (faster: no gain). The ratio comes
//     from the benchmark (all_weights_read_s), else DefaultTarRatio, which
//     exists only for a single gzip stream. The ratio holds on the
//     benchmark's link: with the node's link known (fact linkMbit), the
//     saving is at most the pull time less the time the tar image (the
//     gzip image's bytes over DefaultGzipRatio) takes to cross that link, so
//     a slow link, where uncompressed bytes cost more than gunzip saves,
//     gets none.
//   - lazy-pull (pull): zstd-chunked --prefetch all (containerd's stargz
//     snapshotter with prefetch_async_size, or CRI-O): bench-coldstart
//     measured it ahead of estargz. With P the model image's pull and b vLLM's
//     "before weights" step, the first file is readable after P × first and
//     all weights after P × all (the benchmark's config_readable_s and
//     all_weights_read_s over base's all_weights_read_s, else
//     DefaultLazyFirstRead and DefaultLazyAllWeights); the weights arrive
//     while vLLM imports and sets up, so Ready comes up to
//     (P + b) - max(P × first + b, P × all) sooner. The first-read saving
//     is reported beside it. Needs snapshotter stargz.
//   - image-volume (unattributed): the init-container time between the
//     pulls and the server's start (a copy, in initCopy delivery), which a
//     Kubernetes image volume removes. Needs imageVolumes.
//   - streaming-load (load): weights that loaded slower than
//     DefaultStreamingGiBps load at that rate with vllm --load-format
//     runai_streamer: seconds - GiB / rate; low confidence (a default).
//   - compile-cache (warmup): torch.compile less the dynamo transform (which
//     still runs on a cache hit), unless the logs show a compile cache hit.
//   - readiness-probe (warmup): the readiness lag less the warm-up probe's
//     own work, less the 1 s a 1 s probe period leaves.
//   - warmup-probe (advice): without a warm-up probe line, Ready does not
//     mean warmed; the probe makes it so (it adds, not saves, time).
//
// Per-start quantities combined in a saving (torch.compile and the dynamo
// transform, weight seconds and GiB) are each taken at their p50, so the
// arithmetic shown adds up.
//
// The model image is the pulls of Options.Image's repository; without it,
// every pulled image but the serving container's (Plan.Images gives each
// image's role). When no image of the report is of Options.Image's
// repository (a new image, not deployed yet), the model image is taken as
// without it, and Plan.Warnings says that the model-image numbers are
// measured on that other image (text, md and every emitted file show it).
//
// The warm commands a lever prints carry Options.Namespace, NodeSelector,
// Tolerations and PoolReplicas, and the pinned Options.Image in place of
// the report's model images, so that running them makes the objects Emit
// writes with the same EmitOptions.
//
// Levers are ranked by saving, then confidence, in groups: apply (the
// prerequisites hold), advice, needs (a prerequisite is missing or unknown:
// listed with the reason, never dropped) and no-gain (the numbers do not
// support it: listed with the reason). A saving under
// measure.MinRegressionSeconds is no gain. The pull levers (prepull,
// repack-tar, lazy-pull) shorten the same time: their savings do not add
// up, and the plan says so.
//
// The plan also recommends `modelcar pack` flags (Plan.Pack): the format of
// repack-tar or lazy-pull, whichever applies with the larger saving, else
// tar, the default.
//
// # Facts
//
// Facts come from live discovery (Discover: server version; the GPU nodes'
// container runtime, GPU count, ephemeral storage and SnapshotterLabel, a
// label or annotation whoever installs a snapshotter sets, since the API
// does not show it; modelcar's warm objects), then a facts file, then
// single KEY=VALUE settings, each overriding the one before; Sources says
// where each fact came from. imageVolumes follows from kubernetesVersion
// when not given: on from 1.35, off before 1.31, unknown in between (the
// feature gate is not observable from the API).
//
// # Emitted files
//
// Emit writes, for the modelcar Image (pinned by digest, or refused with
// warm.ErrNoDigest): prepull.yaml (warm.PrepullObjects rendered by
// kube.Render: the modelcar and every other pulled image pinned by digest,
// but for the model images the modelcar replaces;
// image-volume mode, init-container mode when imageVolumes is false) when
// prepull applies; pool.yaml (warm.Pool) when warm-pool applies;
// values.yaml for the vllm-modelcar chart (model.image, model.delivery from
// imageVolumes, vllm.loadFormat, vllm.readinessProbe.periodSeconds,
// warmProbe.enabled, as the levers say, each key's reason in a comment);
// pack-flags.txt. The files are written into a hidden sibling directory
// renamed to DIR when complete; an existing DIR is replaced only when it
// holds nothing but these files.
package plan
