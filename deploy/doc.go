// Package deploy owns how modelcar serves a model on Kubernetes: the Helm
// chart vllm-modelcar (charts/vllm-modelcar), which runs vLLM's
// OpenAI-compatible server on a modelcar pinned by digest, and its tests.
//
// The chart delivers the weights in one of three ways (model.delivery): a
// Kubernetes image volume (imageVolume), a KServe-style sidecar sharing the
// process namespace (modelcar), or an init container running `modelcar pull`
// into an emptyDir or a node-local cache (initCopy). It keeps vLLM offline
// from the Hugging Face Hub, bounds the model load with a startupProbe,
// gates readiness on the `modelcar warm probe` sidecar, and optionally adds
// a PodDisruptionBudget, a ServiceMonitor and a KEDA ScaledObject scaling
// on vllm:num_requests_waiting. values.schema.json rejects what would
// break a deployment (a model image without a digest, negative replicas,
// unknown keys) before anything renders.
//
// Chart embeds the chart's files; Render renders them with the Helm Go SDK
// exactly as `helm template` does (values merged like -f and --set, checked
// against the schema), and Release.Apply applies the result, with the warm
// objects of `--prepull` and `--warm-pool`, through internal/kube's
// server-side applier (field manager modelcar). The same directory installs with plain `helm install`
// and packages with `helm package`. README.md in this directory documents
// the values.
//
// RenderOptions and ReleaseOptions validate themselves before anything
// renders: an option is a *FieldError ("ReleaseName", "WarmPool.GPUsPerPod",
// the same type as warm.FieldError), a chart value deploy checks in Go (the
// images: model.image, modelcar.image) a *ValueError naming its key. Errors
// speak of options and values, never of modelcar deploy's flags.
//
// The tests render the chart with the pinned helm binary (golden files in
// testdata/deploy, regenerated with `go test ./deploy -update`), lint it,
// check the schema's rejections, validate every rendered object with
// kubeconform -strict against schemas from the test cluster's OpenAPI and
// the KEDA and prometheus-operator CRDs, and dry-run it on the test
// cluster's apiserver.
package deploy
