package pack

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// stTensor describes one tensor for stFile.
type stTensor struct {
	name, dtype string
	shape       []int64
}

// stHeaderJSON builds a safetensors header for tensors laid out contiguously
// in the given order, and returns it with the data size it describes.
func stHeaderJSON(t testing.TB, tensors []stTensor, metadata map[string]string) (string, int64) {
	t.Helper()
	var b strings.Builder
	b.WriteString("{")
	if metadata != nil {
		md, err := json.Marshal(metadata)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, `"__metadata__":%s`, md)
	}
	var off int64
	for i, tt := range tensors {
		if i > 0 || metadata != nil {
			b.WriteString(",")
		}
		bitsPer, ok := safetensorsDTypeBits[tt.dtype]
		if !ok {
			t.Fatalf("stHeaderJSON: unknown dtype %q", tt.dtype)
		}
		n := bitsPer
		for _, d := range tt.shape {
			n *= d
		}
		name, _ := json.Marshal(tt.name)
		shape, _ := json.Marshal(tt.shape)
		if tt.shape == nil {
			shape = []byte("[]")
		}
		fmt.Fprintf(&b, `%s:{"dtype":%q,"shape":%s,"data_offsets":[%d,%d]}`, name, tt.dtype, shape, off, off+n/8)
		off += n / 8
	}
	b.WriteString("}")
	return b.String(), off
}

// stRaw assembles a safetensors file from a header and dataSize data bytes.
func stRaw(header string, dataSize int64) []byte {
	out := make([]byte, 8, 8+len(header)+int(dataSize))
	binary.LittleEndian.PutUint64(out, uint64(len(header)))
	out = append(out, header...)
	for i := int64(0); i < dataSize; i++ {
		out = append(out, byte(i*7))
	}
	return out
}

// stFile returns a complete, valid safetensors file holding tensors.
func stFile(t testing.TB, tensors ...stTensor) []byte {
	t.Helper()
	h, n := stHeaderJSON(t, tensors, nil)
	return stRaw(h, n)
}

// stWrite writes data to dir/rel, creating parent directories.
func stWrite(t testing.TB, dir, rel string, data []byte) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadSafetensorsHeaderValid(t *testing.T) {
	tensors := []stTensor{
		{"b.weight", "BF16", []int64{16, 64}},
		{"a.bias", "F32", []int64{16}},
		{"scalar", "I64", nil},
		{"empty", "F16", []int64{0, 5}},
		{"packed", "F4", []int64{3, 2}},
		{"six", "F6_E2M3", []int64{4}},
		{"e8m0", "F8_E8M0", []int64{2}},
		{"flag", "BOOL", []int64{1}},
	}
	hj, n := stHeaderJSON(t, tensors, map[string]string{"format": "pt"})
	// Trailing space padding is allowed by the spec.
	hj += "    "
	data := stRaw(hj, n)
	h, err := ReadSafetensorsHeader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if h.HeaderSize != int64(len(hj)) {
		t.Errorf("HeaderSize = %d, want %d", h.HeaderSize, len(hj))
	}
	if !reflect.DeepEqual(h.Metadata, map[string]string{"format": "pt"}) {
		t.Errorf("Metadata = %v", h.Metadata)
	}
	want := []TensorInfo{
		{Name: "b.weight", DType: "BF16", Shape: []int64{16, 64}, Begin: 0, End: 2048},
		{Name: "a.bias", DType: "F32", Shape: []int64{16}, Begin: 2048, End: 2112},
		{Name: "scalar", DType: "I64", Shape: []int64{}, Begin: 2112, End: 2120},
		{Name: "empty", DType: "F16", Shape: []int64{0, 5}, Begin: 2120, End: 2120},
		{Name: "packed", DType: "F4", Shape: []int64{3, 2}, Begin: 2120, End: 2123},
		{Name: "six", DType: "F6_E2M3", Shape: []int64{4}, Begin: 2123, End: 2126},
		{Name: "e8m0", DType: "F8_E8M0", Shape: []int64{2}, Begin: 2126, End: 2128},
		{Name: "flag", DType: "BOOL", Shape: []int64{1}, Begin: 2128, End: 2129},
	}
	if !reflect.DeepEqual(h.Tensors, want) {
		t.Errorf("Tensors =\n%+v\nwant\n%+v", h.Tensors, want)
	}

	// Header order differing from data order: Tensors follow data order.
	hdr := `{"second":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},"first":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`
	data = stRaw(hdr, 4)
	h, err = ReadSafetensorsHeader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if h.Metadata != nil || len(h.Tensors) != 2 || h.Tensors[0].Name != "first" || h.Tensors[1].Name != "second" {
		t.Errorf("got %+v, want first then second and nil metadata", h)
	}

	// No tensors and no data is a valid (if useless) file.
	data = stRaw(`{}`, 0)
	if _, err := ReadSafetensorsHeader(bytes.NewReader(data), int64(len(data))); err != nil {
		t.Errorf("empty header: %v", err)
	}
}

// stCountingReader records how far reads reach, to show the data is never
// touched.
type stCountingReader struct {
	r       *bytes.Reader
	maxRead int64
}

func (c *stCountingReader) ReadAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > c.maxRead {
		c.maxRead = end
	}
	return c.r.ReadAt(p, off)
}

func TestReadSafetensorsHeaderReadsOnlyHeader(t *testing.T) {
	hj, n := stHeaderJSON(t, []stTensor{{"w", "F32", []int64{1024, 1024}}}, nil)
	data := stRaw(hj, n)
	cr := &stCountingReader{r: bytes.NewReader(data)}
	if _, err := ReadSafetensorsHeader(cr, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if cr.maxRead > int64(8+len(hj)) {
		t.Errorf("read up to byte %d; the header ends at %d", cr.maxRead, 8+len(hj))
	}
}

func TestReadSafetensorsHeaderErrors(t *testing.T) {
	withLen := func(n uint64, rest string) []byte {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint64(b, n)
		return append(b, rest...)
	}
	u8 := func(name string, shape string, b, e int) string {
		return fmt.Sprintf(`%q:{"dtype":"U8","shape":%s,"data_offsets":[%d,%d]}`, name, shape, b, e)
	}
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"too short", []byte{1, 0, 0}, "file is 3 bytes, too short"},
		{"zero header length", withLen(0, "{}"), "header length is 0"},
		{"huge header length", withLen(1<<40, "{}"), "header length 1099511627776 exceeds limit"},
		{"header length with top bit set", withLen(1<<63, "{}"), "exceeds limit"},
		{"header length beyond file", withLen(100, `{"a":1}`), "header length 100 runs past the end of the file: only 7 bytes follow"},
		{"truncated data", stRaw(`{`+u8("w", "[16]", 0, 16)+`}`, 10), "truncated: tensors need 16 bytes of data but only 10 follow the header"},
		{"extra data", stRaw(`{`+u8("w", "[16]", 0, 16)+`}`, 20), "20 bytes of data follow the header but tensors cover only 16"},
		{"no tensors but data", stRaw(`{}`, 3), "3 bytes of data follow the header but tensors cover only 0"},
		{"corrupt JSON", stRaw(`{"w":{"dtype":"U8",   `, 0), "unexpected end of JSON"},
		{"corrupt JSON syntax", stRaw(`{"w":{"dtype":"U8" "shape":[1]}}`, 0), "invalid JSON at byte"},
		{"not an object", stRaw(`["w"]`, 0), `header does not start with '{'`},
		{"leading whitespace", stRaw(` {}`, 0), `header does not start with '{'`},
		{"trailing garbage", stRaw(`{} x`, 0), "unexpected data after the JSON value"},
		{"second object", stRaw(`{}{}`, 0), "unexpected data after the JSON value"},
		{"invalid UTF-8", stRaw("{\"\xff\":1}", 0), "not valid UTF-8"},
		{"duplicate tensor", stRaw(`{`+u8("w", "[1]", 0, 1)+`,`+u8("w", "[1]", 1, 2)+`}`, 2), `duplicate key "w"`},
		{"duplicate metadata", stRaw(`{"__metadata__":{},"__metadata__":{}}`, 0), `duplicate key "__metadata__"`},
		{"duplicate field", stRaw(`{"w":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1), `tensor "w": duplicate field "dtype"`},
		{"duplicate metadata key", stRaw(`{"__metadata__":{"a":"1","a":"2"}}`, 0), `__metadata__: duplicate key "a"`},
		{"metadata not string", stRaw(`{"__metadata__":{"a":1}}`, 0), `__metadata__ value for "a" is a number, want a string`},
		{"metadata not object", stRaw(`{"__metadata__":[]}`, 0), `__metadata__ is an array`},
		{"unknown dtype", stRaw(`{"w":{"dtype":"F12","shape":[1],"data_offsets":[0,2]}}`, 2), `tensor "w": unknown dtype "F12"`},
		{"dtype not string", stRaw(`{"w":{"dtype":16,"shape":[1],"data_offsets":[0,2]}}`, 2), `tensor "w": dtype is a number`},
		{"unknown field", stRaw(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"stride":[1]}}`, 1), `tensor "w": unknown field "stride"`},
		{"missing dtype", stRaw(`{"w":{"shape":[1],"data_offsets":[0,1]}}`, 1), `tensor "w": missing field "dtype"`},
		{"missing shape", stRaw(`{"w":{"dtype":"U8","data_offsets":[0,1]}}`, 1), `tensor "w": missing field "shape"`},
		{"missing offsets", stRaw(`{"w":{"dtype":"U8","shape":[1]}}`, 1), `tensor "w": missing field "data_offsets"`},
		{"entry not object", stRaw(`{"w":"U8"}`, 0), `tensor "w": entry is a string, want an object`},
		{"negative dim", stRaw(`{"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}`, 1), `tensor "w": shape[0] is -1, want a non-negative integer`},
		{"fractional dim", stRaw(`{"w":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}}`, 1), `shape[0] is 1.5`},
		{"exponent dim", stRaw(`{"w":{"dtype":"U8","shape":[1e2],"data_offsets":[0,100]}}`, 100), `shape[0] is 1e2`},
		{"string dim", stRaw(`{"w":{"dtype":"U8","shape":["1"],"data_offsets":[0,1]}}`, 1), `shape[0] is a string`},
		{"dim too large", stRaw(`{"w":{"dtype":"U8","shape":[99999999999999999999],"data_offsets":[0,1]}}`, 1), `shape[0] is 99999999999999999999, too large`},
		{"shape overflow", stRaw(`{"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,1]}}`, 1), `shape [4294967296 4294967296] overflows`},
		{"byte overflow", stRaw(`{"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,1]}}`, 1), `shape [4611686018427387904] of F64 overflows`},
		{"shape overflow before zero", stRaw(`{"w":{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}`, 0), `overflows`},
		{"offsets not pair", stRaw(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}`, 1), `data_offsets has 3 elements, want 2`},
		{"offsets negative", stRaw(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}`, 1), `data_offsets[0] is -1`},
		{"end before begin", stRaw(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[2,1]}}`, 2), `tensor "w": data_offsets [2 1] end before they begin`},
		{"sub-byte not whole", stRaw(`{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}`, 2), `tensor "w": shape [3] of F4 is 12 bits, not a whole number of bytes`},
		{"F6 not whole", stRaw(`{"w":{"dtype":"F6_E3M2","shape":[1,3],"data_offsets":[0,3]}}`, 3), `shape [1 3] of F6_E3M2 is 18 bits`},
		{"shape/offset mismatch",
			stRaw(`{"model.layers.0.mlp.up_proj.weight":{"dtype":"BF16","shape":[16,64],"data_offsets":[0,1024]}}`, 1024),
			`tensor "model.layers.0.mlp.up_proj.weight": data_offsets [0 1024] hold 1024 bytes but shape [16 64] of BF16 needs 2048`},
		{"overlap", stRaw(`{`+u8("a", "[8]", 0, 8)+`,`+u8("b", "[8]", 4, 12)+`}`, 12), `tensor "b": data_offsets [4 12] overlap tensor "a", which ends at 8`},
		{"identical ranges", stRaw(`{`+u8("a", "[8]", 0, 8)+`,`+u8("b", "[8]", 0, 8)+`}`, 8), `tensor "b": data_offsets [0 8] overlap tensor "a"`},
		{"hole between", stRaw(`{`+u8("a", "[8]", 0, 8)+`,`+u8("b", "[8]", 10, 18)+`}`, 18), `hole in data: bytes [8 10) between tensor "a" and tensor "b"`},
		{"hole at start", stRaw(`{`+u8("a", "[8]", 4, 12)+`}`, 12), `hole in data: bytes [0 4) before tensor "a"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ReadSafetensorsHeader(bytes.NewReader(tc.file), int64(len(tc.file)))
			if err == nil {
				t.Fatalf("no error; header %+v", h)
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\ndoes not contain %q", err, tc.want)
			}
		})
	}
}

func TestReadSafetensorsHeaderShortReader(t *testing.T) {
	// size claims more than the reader holds.
	data := stFile(t, stTensor{"w", "U8", []int64{4}})
	_, err := ReadSafetensorsHeader(bytes.NewReader(data[:10]), int64(len(data)))
	if err == nil || !strings.Contains(err.Error(), "reading") {
		t.Errorf("err = %v, want a read error", err)
	}
}
