// Package pack turns a Hugging Face model directory into a modelcar: a
// reproducible, runnable OCI image whose layers hold the model files under
// /models, laid out for fast pulls.
//
// It owns reading and validating the model (safetensors headers, shard
// indexes, JSON files), choosing layers (small files first, then one layer per
// large file in the order a server loads them), deterministic tar streams, the
// layer formats (tar, gzip, zstd, eStargz and zstd:chunked), one image per
// platform (an image index when there are several, sharing the model
// layers), and building on a base image it is handed. It writes to a Store
// (PackTo) and reads the base through Base: it parses no image reference and
// never touches the network. The transfer layer (push.Pack, push.WithBase)
// opens the output and the base, whatever their kind, with one set of
// transfer options.
//
// go-containerregistry provides the image model (v1.Manifest, v1.ConfigFile,
// the OCI layout index) and the estargz module builds eStargz and zstd:chunked
// layers; pack itself only streams bytes between them.
package pack
