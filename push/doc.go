// Package push moves modelcars between registries, OCI image layouts and OCI
// archives without changing a byte of any manifest, so a digest pinned in CI
// survives every hop into an air gap; it also extracts a model back into a
// directory and re-verifies stored images.
//
// It is modelcar's one OCI endpoint layer: every image reference, whatever
// its kind (REGISTRY/REPO, oci:PATH, oci-archive:FILE), is opened here with
// one set of transfer options (plain HTTP, TLS, credentials, idle timeout,
// retries, jobs), one HTTP client and one staging policy for what is
// written. Copy, Pull, Verify, ReadImage and Inspect read through it; Pack
// opens pack's output store and its base image through it.
//
// oras-go walks the image graph (concurrency, skipping blobs the
// destination has, cross-repository mounts, referrers) and speaks the
// registry API for manifests and auth (docker config.json, credential
// helpers, bearer tokens). This package adds what neither oras-go nor
// go-containerregistry does: blob uploads that are chunked to fit the
// registry, fall back to a single PUT where chunks are refused, retry, and
// resume from the registry's acknowledged offset, across process restarts,
// from a small state file per upload. go-containerregistry provides the
// v1.Image view used for extraction.
package push
