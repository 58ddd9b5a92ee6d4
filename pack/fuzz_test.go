package pack

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func FuzzReadSafetensorsHeader(f *testing.F) {
	valid := stFile(f,
		stTensor{"model.embed_tokens.weight", "BF16", []int64{4, 8}},
		stTensor{"model.norm.weight", "F32", []int64{8}},
		stTensor{"packed", "F4", []int64{2, 3}},
		stTensor{"empty", "F16", []int64{0}},
		stTensor{"scalar", "I64", nil},
	)
	f.Add(valid)
	hj, n := stHeaderJSON(f, []stTensor{{"w", "U8", []int64{3}}}, map[string]string{"format": "pt"})
	f.Add(stRaw(hj+"  ", n))
	f.Add(stRaw(`{}`, 0))
	f.Add(valid[:len(valid)-1]) // truncated data
	f.Add(valid[:20])           // truncated header
	f.Add(stRaw(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2))
	f.Add(stRaw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12))
	f.Add(stRaw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}`, 24))
	f.Add(stRaw(`{"w":{"dtype":"F6_E2M3","shape":[4294967296,4294967296],"data_offsets":[0,3]}}`, 3))
	f.Add(stRaw(`{"__metadata__":{"a":"b"},"w":{"dtype":"F12","shape":[1],"data_offsets":[0,1]}}`, 1))
	huge := make([]byte, 10)
	binary.LittleEndian.PutUint64(huge, 1<<62)
	f.Add(huge)
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		h, err := ReadSafetensorsHeader(bytes.NewReader(data), size)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if h.HeaderSize <= 0 || h.HeaderSize > MaxSafetensorsHeaderSize || 8+h.HeaderSize > size {
			t.Fatalf("HeaderSize %d for a %d-byte file", h.HeaderSize, size)
		}
		var next int64
		seen := make(map[string]bool)
		for _, ti := range h.Tensors {
			if seen[ti.Name] {
				t.Fatalf("tensor %q twice", ti.Name)
			}
			seen[ti.Name] = true
			if ti.Begin != next {
				t.Fatalf("tensor %q begins at %d, want %d (contiguous)", ti.Name, ti.Begin, next)
			}
			if ti.End < ti.Begin {
				t.Fatalf("tensor %q ends before it begins", ti.Name)
			}
			bitsPer, ok := safetensorsDTypeBits[ti.DType]
			if !ok {
				t.Fatalf("tensor %q has unknown dtype %q", ti.Name, ti.DType)
			}
			nbits := bitsPer
			for _, d := range ti.Shape {
				if d < 0 {
					t.Fatalf("tensor %q has negative dimension", ti.Name)
				}
				nbits *= d // cannot overflow: the parser checked
			}
			if nbits%8 != 0 || nbits/8 != ti.End-ti.Begin {
				t.Fatalf("tensor %q: %d bits of data in %d bytes", ti.Name, nbits, ti.End-ti.Begin)
			}
			next = ti.End
		}
		if next != size-8-h.HeaderSize {
			t.Fatalf("tensors cover %d data bytes, file has %d", next, size-8-h.HeaderSize)
		}
	})
}

func FuzzValidateIndex(f *testing.F) {
	f.Add([]byte(vtIndex("1234", "lm_head.weight", vtShard2, "model.embed_tokens.weight", vtShard1, "model.norm.weight", vtShard2)))
	f.Add([]byte(`{"metadata":{"total_size":1.5e10,"x":[{}]},"extra":null,"weight_map":{}}`))
	f.Add([]byte(`{"weight_map":{"a":"s","a":"t"}}`))
	f.Add([]byte(`{"weight_map":{"a":1}}`))
	f.Add([]byte(`{"metadata":{"total_size":"1"},"weight_map":{"a":"s"}}`))
	f.Add([]byte(`{"weight_map":{"a":"s"}} x`))
	f.Add([]byte(`{"weight_map":{"a":"s"`))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))

	f.Fuzz(func(t *testing.T, data []byte) {
		order, weightMap, err := parseIndex(bytes.NewReader(data))
		// The generic JSON check must accept everything parseIndex does.
		jsonErr := checkJSON(bytes.NewReader(data))
		if err != nil {
			return
		}
		if jsonErr != nil {
			t.Fatalf("parseIndex accepted what checkJSON rejects: %v", jsonErr)
		}
		if weightMap == nil {
			t.Fatal("nil weightMap without error")
		}
		inOrder := make(map[string]bool)
		for _, s := range order {
			if inOrder[s] {
				t.Fatalf("shard %q twice in order", s)
			}
			if s == "" {
				t.Fatal("empty shard name")
			}
			inOrder[s] = true
		}
		used := make(map[string]bool)
		for tensor, s := range weightMap {
			if !inOrder[s] {
				t.Fatalf("tensor %q maps to %q, which is not in order", tensor, s)
			}
			used[s] = true
		}
		if len(used) != len(order) {
			t.Fatalf("order has %d shards, weight_map uses %d", len(order), len(used))
		}
	})
}
