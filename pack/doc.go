// Package pack turns a Hugging Face model directory into a modelcar: a
// reproducible, runnable OCI image whose layers hold the model files under
// /models, laid out for fast pulls.
//
// It owns reading and validating the model (safetensors headers, shard
// indexes, JSON files), choosing layers (small files first, then one layer per
// large file in the order a server loads them), deterministic tar streams, the
// layer formats (tar, gzip, zstd, eStargz and zstd:chunked), one image per
// platform (an image index when there are several, sharing the model
// layers), and writing an OCI image layout or archive atomically. It never touches the network except
// to read a --base image from a registry.
//
// go-containerregistry provides the image model (v1.Manifest, v1.ConfigFile,
// the OCI layout index) and the estargz module builds eStargz and zstd:chunked
// layers; pack itself only streams bytes between them.
package pack
