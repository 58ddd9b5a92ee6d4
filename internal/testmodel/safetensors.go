package testmodel

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// Tensor describes one tensor of a safetensors file.
type Tensor struct {
	Name  string
	DType string  // safetensors dtype name: "BF16", "F32", "I64", ...
	Shape []int64 // empty for a scalar
}

// dtypeSizes are the element sizes of the safetensors dtypes.
var dtypeSizes = map[string]int64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
	"U16": 2, "I16": 2, "F16": 2, "BF16": 2,
	"U32": 4, "I32": 4, "F32": 4,
	"U64": 8, "I64": 8, "F64": 8,
}

// DTypeSize is the size in bytes of one element of the safetensors dtype,
// or 0 for a dtype it does not know.
func DTypeSize(dtype string) int64 { return dtypeSizes[dtype] }

// Size is the number of data bytes of the tensor: the product of its shape
// times the element size (0 for an unknown dtype).
func (t Tensor) Size() int64 {
	n := DTypeSize(t.DType)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// ShardName is the Hugging Face name of shard i (0-based) of n:
// model-00001-of-00004.safetensors.
func ShardName(i, n int) string {
	return fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, n)
}

// EncodeHeader returns the first bytes of a safetensors file holding tensors
// in the given order: the 8-byte little-endian header length, then the JSON
// header ({"__metadata__":{...}, "name":{"dtype","shape","data_offsets"},
// ...}) padded with spaces to a multiple of 8 bytes, as the reference
// implementation does. Data offsets are contiguous from 0 in tensor order.
// Metadata keys are written sorted; a nil or empty metadata map leaves
// __metadata__ out.
func EncodeHeader(tensors []Tensor, metadata map[string]string) ([]byte, error) {
	var b bytes.Buffer
	b.Write(make([]byte, 8))
	b.WriteByte('{')
	first := true
	if len(metadata) > 0 {
		b.WriteString(`"__metadata__":{`)
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(&b, k)
			b.WriteByte(':')
			writeJSONString(&b, metadata[k])
		}
		b.WriteByte('}')
		first = false
	}
	seen := make(map[string]bool, len(tensors))
	var off int64
	for _, t := range tensors {
		switch {
		case t.Name == "" || t.Name == "__metadata__":
			return nil, fmt.Errorf("safetensors: invalid tensor name %q", t.Name)
		case seen[t.Name]:
			return nil, fmt.Errorf("safetensors: duplicate tensor %q", t.Name)
		case DTypeSize(t.DType) == 0:
			return nil, fmt.Errorf("safetensors: tensor %q: unknown dtype %q", t.Name, t.DType)
		case slices.ContainsFunc(t.Shape, func(d int64) bool { return d < 0 }):
			return nil, fmt.Errorf("safetensors: tensor %q: negative dimension in %v", t.Name, t.Shape)
		}
		seen[t.Name] = true
		if !first {
			b.WriteByte(',')
		}
		first = false
		writeJSONString(&b, t.Name)
		b.WriteString(`:{"dtype":`)
		writeJSONString(&b, t.DType)
		b.WriteString(`,"shape":[`)
		for i, d := range t.Shape {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(d, 10))
		}
		end := off + t.Size()
		fmt.Fprintf(&b, `],"data_offsets":[%d,%d]}`, off, end)
		off = end
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	out := b.Bytes()
	binary.LittleEndian.PutUint64(out, uint64(len(out)-8))
	return out, nil
}

// WriteSafetensors writes a whole safetensors file to w: the header from
// EncodeHeader with metadata {"format":"pt"}, then the data of each tensor in
// order, produced by data(name, n, w), which must write exactly n bytes.
// A nil data writes zeros.
func WriteSafetensors(w io.Writer, tensors []Tensor, data func(name string, n int64, w io.Writer) error) error {
	hdr, err := EncodeHeader(tensors, map[string]string{"format": "pt"})
	if err != nil {
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	if data == nil {
		data = zeroData
	}
	for _, t := range tensors {
		n := t.Size()
		cw := &countingWriter{w: w}
		if err := data(t.Name, n, cw); err != nil {
			return fmt.Errorf("safetensors: tensor %s: %w", t.Name, err)
		}
		if cw.n != n {
			return fmt.Errorf("safetensors: tensor %s: data wrote %d bytes, want %d", t.Name, cw.n, n)
		}
	}
	return nil
}

func zeroData(_ string, n int64, w io.Writer) error {
	_, err := io.CopyN(w, zeroReader{}, n)
	return err
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// writeJSONString writes s as a JSON string without HTML escaping.
func writeJSONString(b *bytes.Buffer, s string) {
	_ = jsonEncode(b, s, "")
}

// jsonEncode writes v as JSON to b without HTML escaping, indented with
// indent when it is not empty, and without the encoder's trailing newline.
func jsonEncode(b *bytes.Buffer, v any, indent string) error {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if indent != "" {
		enc.SetIndent("", indent)
	}
	if err := enc.Encode(v); err != nil {
		return err
	}
	if b.Len() == 0 || b.Bytes()[b.Len()-1] != '\n' {
		return errors.New("json: missing newline")
	}
	b.Truncate(b.Len() - 1)
	return nil
}
