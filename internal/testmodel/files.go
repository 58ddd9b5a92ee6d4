package testmodel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// transformersVersion is the version the JSON files claim to come from.
const transformersVersion = "4.44.0"

// Special tokens, with ids 0, 1, 2.
var specialTokens = []string{"<unk>", "<s>", "</s>"}

// maxTokenizerVocab bounds the tokenizer's vocabulary; config.json's
// vocab_size may be larger (padded embeddings), as in real models.
const maxTokenizerVocab = 1024

type jsonFile struct {
	name string
	data []byte
}

// jsonFiles renders the model's config and tokenizer files.
func jsonFiles(a Arch, seed int64) []jsonFile {
	config := obj{
		{"architectures", []string{"LlamaForCausalLM"}},
		{"attention_bias", false},
		{"attention_dropout", json.Number("0.0")},
		{"bos_token_id", 1},
		{"eos_token_id", 2},
		{"head_dim", a.HeadDim},
		{"hidden_act", "silu"},
		{"hidden_size", a.Hidden},
		{"initializer_range", 0.02},
		{"intermediate_size", a.Intermediate},
		{"max_position_embeddings", 4096},
		{"mlp_bias", false},
		{"model_type", "llama"},
		{"num_attention_heads", a.Heads},
		{"num_hidden_layers", a.Layers},
		{"num_key_value_heads", a.KVHeads},
		{"pretraining_tp", 1},
		{"rms_norm_eps", json.Number("1e-05")},
		{"rope_scaling", nil},
		{"rope_theta", json.Number("10000.0")},
		{"tie_word_embeddings", false},
		{"torch_dtype", "bfloat16"},
		{"transformers_version", transformersVersion},
		{"use_cache", true},
		{"vocab_size", a.Vocab},
	}
	genConfig := obj{
		{"_from_model_config", true},
		{"bos_token_id", 1},
		{"do_sample", true},
		{"eos_token_id", 2},
		{"max_length", 4096},
		{"temperature", 0.6},
		{"top_p", 0.9},
		{"transformers_version", transformersVersion},
	}

	vocab, merges := bpeVocab(min(a.Vocab, maxTokenizerVocab), seed)
	var added []obj
	decoder := obj{}
	special := obj{}
	for id, tok := range specialTokens {
		added = append(added, obj{
			{"id", id}, {"content", tok}, {"single_word", false}, {"lstrip", false},
			{"rstrip", false}, {"normalized", false}, {"special", true},
		})
		decoder = append(decoder, field{strconv.Itoa(id), obj{
			{"content", tok}, {"lstrip", false}, {"normalized", false},
			{"rstrip", false}, {"single_word", false}, {"special", true},
		}})
	}
	for _, s := range []struct{ key, tok string }{{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}} {
		special = append(special, field{s.key, obj{
			{"content", s.tok}, {"lstrip", false}, {"normalized", false},
			{"rstrip", false}, {"single_word", false},
		}})
	}
	byteLevel := obj{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}
	tokenizer := obj{
		{"version", "1.0"},
		{"truncation", nil},
		{"padding", nil},
		{"added_tokens", added},
		{"normalizer", nil},
		{"pre_tokenizer", byteLevel},
		{"post_processor", obj{
			{"type", "TemplateProcessing"},
			{"single", []obj{
				{{"SpecialToken", obj{{"id", "<s>"}, {"type_id", 0}}}},
				{{"Sequence", obj{{"id", "A"}, {"type_id", 0}}}},
			}},
			{"pair", []obj{
				{{"SpecialToken", obj{{"id", "<s>"}, {"type_id", 0}}}},
				{{"Sequence", obj{{"id", "A"}, {"type_id", 0}}}},
				{{"SpecialToken", obj{{"id", "<s>"}, {"type_id", 1}}}},
				{{"Sequence", obj{{"id", "B"}, {"type_id", 1}}}},
			}},
			{"special_tokens", obj{
				{"<s>", obj{{"id", "<s>"}, {"ids", []int{1}}, {"tokens", []string{"<s>"}}}},
			}},
		}},
		{"decoder", byteLevel},
		{"model", obj{
			{"type", "BPE"},
			{"dropout", nil},
			{"unk_token", nil},
			{"continuing_subword_prefix", nil},
			{"end_of_word_suffix", nil},
			{"fuse_unk", false},
			{"byte_fallback", false},
			{"ignore_merges", false},
			{"vocab", vocab},
			{"merges", merges},
		}},
	}
	tokConfig := obj{
		{"add_bos_token", true},
		{"add_eos_token", false},
		{"added_tokens_decoder", decoder},
		{"bos_token", "<s>"},
		{"clean_up_tokenization_spaces", false},
		{"eos_token", "</s>"},
		{"model_max_length", 4096},
		{"pad_token", nil},
		{"tokenizer_class", "PreTrainedTokenizerFast"},
		{"unk_token", "<unk>"},
	}
	return []jsonFile{
		{"config.json", render(config)},
		{"generation_config.json", render(genConfig)},
		{"special_tokens_map.json", render(special)},
		{"tokenizer.json", render(tokenizer)},
		{"tokenizer_config.json", render(tokConfig)},
	}
}

// indexJSON renders model.safetensors.index.json: total_size is the sum of
// the tensor data sizes; weight_map lists the tensors in shard order.
func indexJSON(shards [][]Tensor, names []string) ([]byte, error) {
	var total int64
	var weights obj
	for i, ts := range shards {
		for _, t := range ts {
			total += t.Size()
			weights = append(weights, field{t.Name, names[i]})
		}
	}
	return render(obj{
		{"metadata", obj{{"total_size", total}}},
		{"weight_map", weights},
	}), nil
}

// render writes v as JSON indented by two spaces, with a final newline.
func render(v any) []byte {
	var b bytes.Buffer
	if err := jsonEncode(&b, v, "  "); err != nil {
		panic(fmt.Sprintf("testmodel: render JSON: %v", err)) // only fixed, valid values
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// field is one member of an obj.
type field struct {
	k string
	v any
}

// obj is a JSON object that keeps its members in order.
type obj []field

func (o obj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		if err := jsonEncode(&b, f.k, ""); err != nil {
			return nil, err
		}
		b.WriteByte(':')
		if err := jsonEncode(&b, f.v, ""); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// byteLevelAlphabet is GPT-2's byte-to-unicode table: the 256 characters
// that byte-level BPE uses for the bytes 0-255, in vocabulary order
// (printable bytes first).
func byteLevelAlphabet() (order []string, ofByte [256]string) {
	var bs []int
	for b := 0; b < 256; b++ {
		if ('!' <= b && b <= '~') || (0xa1 <= b && b <= 0xac) || (0xae <= b && b <= 0xff) {
			bs = append(bs, b)
			ofByte[b] = string(rune(b))
		}
	}
	n := 0
	for b := 0; b < 256; b++ {
		if ofByte[b] == "" {
			bs = append(bs, b)
			ofByte[b] = string(rune(256 + n))
			n++
		}
	}
	for _, b := range bs {
		order = append(order, ofByte[b])
	}
	return order, ofByte
}

// bpeVocab builds a byte-level BPE vocabulary of size tokens (at least the
// specials and the 256 byte characters) and its merges: random but valid
// merges of lowercase words, each merge's parts and result in the vocab.
func bpeVocab(size, seed int64) (obj, []string) {
	order, ofByte := byteLevelAlphabet()
	var tokens []string
	tokens = append(tokens, specialTokens...)
	tokens = append(tokens, order...)
	have := make(map[string]bool, size)
	for _, t := range tokens {
		have[t] = true
	}
	space := ofByte[' ']
	pool := []string{space}
	for c := 'a'; c <= 'z'; c++ {
		pool = append(pool, string(c))
	}
	g := rng{state: splitmix64(uint64(seed) ^ 0x746f6b656e697a65)}
	var merges []string
	for tries := 0; int64(len(tokens)) < size && tries < 100*int(size); tries++ {
		r := g.next()
		a, b := pool[r%uint64(len(pool))], pool[(r>>32)%uint64(len(pool))]
		if strings.HasPrefix(b, space) {
			continue // a space only starts a word
		}
		t := a + b
		if have[t] || utf8.RuneCountInString(t) > 8 {
			continue
		}
		have[t] = true
		tokens = append(tokens, t)
		pool = append(pool, t)
		merges = append(merges, a+" "+b)
	}
	vocab := make(obj, len(tokens))
	for id, t := range tokens {
		vocab[id] = field{t, id}
	}
	return vocab, merges
}
