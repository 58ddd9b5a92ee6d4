// Package testmodel owns the deterministic test models: it writes Hugging
// Face style model directories (config, tokenizer files, a safetensors index
// and bf16 safetensors shards) of any size from a seed, so tests and
// benchmarks never download or commit real weights.
//
// Generate is the entry point. The same Options always give a byte-identical
// directory; the weights are pseudo-random bf16 values drawn from a normal
// distribution, so they compress about like real weights. Generation streams
// in 1 MiB chunks and runs at several hundred MB/s or more on one core,
// so multi-GiB models are cheap to make on the fly.
//
// EncodeHeader, WriteSafetensors and RandomData are the building blocks
// Generate uses; tests that need a broken or unusual shard can craft one by
// hand with them.
package testmodel
