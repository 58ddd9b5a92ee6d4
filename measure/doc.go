// Package measure splits cold starts into provisioning, image pull, model
// load and warm-up from Pods, Events, Nodes and vLLM logs, and writes reports.
//
// It owns cold-start timelines: the Bundle of what Kubernetes and the serving
// containers recorded (read from a directory of kubectl output by
// ReadBundle, or filled by a live collector and recorded by Bundle.Write),
// the phase model (Analyze), the reports (Render: text, Markdown, JSON, SVG)
// and comparisons between reports (Compare, RenderDiff). Watch and Run
// collect live through client-go (informers on Pods, both Event APIs and
// Nodes, container logs with timestamps) into the same Bundle, which
// Analyze reads unchanged.
//
// # The phase model
//
// Per pod, from metadata.creationTimestamp to the Ready condition's
// lastTransitionTime (the total):
//
//   - provision: creation → the Scheduled event (eventTime, microseconds),
//     else the PodScheduled condition. When the pod's node was created after
//     the pod, itemised as waiting for scale-up (→ Node creationTimestamp),
//     node boot (→ Node Ready condition), GPU allocatable (→ the time in
//     GPUAllocatableAnnotation, when a collector recorded it) and scheduling
//     (→ scheduled). cluster-autoscaler's TriggeredScaleUp and Karpenter's
//     Nominated events name who added the node.
//   - pull: the union of the pod's image pulls from kubelet events, each
//     ending at its Pulled event and starting the "(Y including waiting)"
//     duration of its message earlier (the Pulling event when the message has
//     no duration, or when an earlier Pulling event shows failed attempts);
//     "already present on machine" is a cached pull of zero. Pulls count
//     between scheduling and the serving container's start.
//   - load: the serving container's start (containerStatuses
//     state.running.startedAt, else its Started event, else its first log
//     line) → weights loaded: the last "Model loading took" line, else
//     "Loading weights took", else vLLM 0.5's "Loading model weights took".
//   - warmup: weights loaded → Ready, itemised from the pod's logs: memory
//     profiling, torch.compile, compile cache, graph capture, KV cache, init
//     engine, "Application startup complete.", the warm-up probe's "warm-up done"
//     line (internal/probelog) and the readiness lag after the server came up.
//
// Each instant belongs to at most one phase, taken in that order; what no
// phase claims is unattributed, so the phases and UnattributedSeconds add up
// to the total exactly (all times are truncated to the millisecond first).
// Missing data never fails the analysis: the report says what is missing.
//
// # Parsing
//
// Pods and nodes are decoded item by item with encoding/json into minimal
// structs. Events, which can number hundreds of thousands, go through a
// small streaming scanner of their own (scan.go) that extracts the dozen
// fields measure reads: encoding/json scans every byte twice and took 1.6 s
// for 100,000 events where the scanner takes about 0.5 s on two cores. Tests
// check that both read the same. Only Watch and Run use client-go; the
// offline path reads kubectl's JSON with its own minimal structs.
package measure
