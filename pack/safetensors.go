package pack

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"unicode/utf8"
)

// MaxSafetensorsHeaderSize is the largest JSON header ReadSafetensorsHeader
// accepts (100 MiB). The reference implementation refuses larger headers too,
// so such a file could not be loaded by a server anyway.
const MaxSafetensorsHeaderSize = 100 << 20

// SafetensorsHeader is the parsed header of one safetensors file.
type SafetensorsHeader struct {
	// HeaderSize is the JSON length from the 8-byte little-endian prefix.
	// The tensor data starts at byte 8+HeaderSize of the file.
	HeaderSize int64
	// Metadata is "__metadata__"; nil when the header has none.
	Metadata map[string]string
	// Tensors are in file order of their data offsets.
	Tensors []TensorInfo
}

// TensorInfo describes one tensor of a safetensors file. Begin and End are
// byte offsets relative to the start of the data section (after the header).
type TensorInfo struct {
	Name, DType string
	Shape       []int64
	Begin, End  int64
}

// safetensorsDTypeBits is the size in bits of one element of each dtype the
// safetensors format knows.
var safetensorsDTypeBits = map[string]int64{
	"BOOL":    8,
	"U8":      8,
	"I8":      8,
	"F8_E5M2": 8,
	"F8_E4M3": 8,
	"F8_E8M0": 8,
	"F4":      4,
	"F6_E2M3": 6,
	"F6_E3M2": 6,
	"I16":     16,
	"U16":     16,
	"F16":     16,
	"BF16":    16,
	"I32":     32,
	"U32":     32,
	"F32":     32,
	"F64":     64,
	"I64":     64,
	"U64":     64,
	"C64":     64,
}

// ReadSafetensorsHeader reads and checks the header of a safetensors file of
// the given size. Only the 8-byte length prefix and the JSON header are read,
// never the tensor data.
//
// Beyond parsing, it checks what the safetensors reference implementation
// checks before it hands out a tensor: every dtype is known, every tensor's
// byte range holds exactly shape × dtype size bytes, the ranges tile the data
// section from 0 without holes or overlaps, and the data section is exactly as
// long as the last range's end. Duplicate JSON keys are rejected.
func ReadSafetensorsHeader(r io.ReaderAt, size int64) (*SafetensorsHeader, error) {
	if size < 8 {
		return nil, fmt.Errorf("file is %d bytes, too short for the 8-byte header length prefix", size)
	}
	var prefix [8]byte
	if err := readFullAt(r, prefix[:], 0); err != nil {
		return nil, fmt.Errorf("reading header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(prefix[:])
	switch {
	case n == 0:
		return nil, errors.New("header length is 0")
	case n > MaxSafetensorsHeaderSize:
		return nil, fmt.Errorf("header length %d exceeds limit of %d bytes", n, MaxSafetensorsHeaderSize)
	case n > uint64(size-8):
		return nil, fmt.Errorf("header length %d runs past the end of the file: only %d bytes follow the 8-byte prefix", n, size-8)
	}
	buf := make([]byte, n)
	if err := readFullAt(r, buf, 8); err != nil {
		return nil, fmt.Errorf("reading %d-byte header: %w", n, err)
	}
	h, err := parseSafetensorsJSON(buf)
	if err != nil {
		return nil, err
	}
	h.HeaderSize = int64(n)
	if err := checkSafetensorsLayout(h.Tensors, size-8-int64(n)); err != nil {
		return nil, err
	}
	return h, nil
}

// readFullAt fills p from r at off; a short read is an error.
func readFullAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// parseSafetensorsJSON decodes a header's JSON and checks each tensor entry on
// its own. Tensors come back in header order.
func parseSafetensorsJSON(buf []byte) (*SafetensorsHeader, error) {
	if !utf8.Valid(buf) {
		return nil, errors.New("header is not valid UTF-8")
	}
	if buf[0] != '{' {
		return nil, fmt.Errorf("header does not start with '{' (starts with %q)", buf[0])
	}
	dec := json.NewDecoder(bytes.NewReader(buf))
	dec.UseNumber()
	if err := jsonExpectDelim(dec, '{', "header"); err != nil {
		return nil, err
	}
	h := &SafetensorsHeader{}
	seen := make(map[string]bool)
	for dec.More() {
		key, err := jsonKey(dec)
		if err != nil {
			return nil, fmt.Errorf("header: %w", err)
		}
		if seen[key] {
			return nil, fmt.Errorf("header: duplicate key %q", key)
		}
		seen[key] = true
		if key == "__metadata__" {
			md, err := parseSafetensorsMetadata(dec)
			if err != nil {
				return nil, err
			}
			h.Metadata = md
			continue
		}
		t, err := parseTensorEntry(dec, key)
		if err != nil {
			return nil, err
		}
		h.Tensors = append(h.Tensors, t)
	}
	if err := jsonExpectDelim(dec, '}', "header"); err != nil {
		return nil, err
	}
	if err := jsonExpectEOF(dec); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	return h, nil
}

func parseSafetensorsMetadata(dec *json.Decoder) (map[string]string, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("header: __metadata__: %w", jsonErr(dec, err))
	}
	if tok == nil {
		return nil, nil
	}
	if tok != json.Delim('{') {
		return nil, fmt.Errorf("header: __metadata__ is %s, want an object of strings", jsonKind(tok))
	}
	md := make(map[string]string)
	for dec.More() {
		key, err := jsonKey(dec)
		if err != nil {
			return nil, fmt.Errorf("header: __metadata__: %w", err)
		}
		if _, dup := md[key]; dup {
			return nil, fmt.Errorf("header: __metadata__: duplicate key %q", key)
		}
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("header: __metadata__: %w", jsonErr(dec, err))
		}
		s, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("header: __metadata__ value for %q is %s, want a string", key, jsonKind(tok))
		}
		md[key] = s
	}
	if err := jsonExpectDelim(dec, '}', "__metadata__"); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	return md, nil
}

// parseTensorEntry decodes the object describing tensor name and checks that
// its byte range is exactly as long as its shape and dtype need.
func parseTensorEntry(dec *json.Decoder, name string) (TensorInfo, error) {
	t := TensorInfo{Name: name}
	fail := func(format string, args ...any) (TensorInfo, error) {
		return TensorInfo{}, fmt.Errorf("tensor %q: %s", name, fmt.Sprintf(format, args...))
	}
	tok, err := dec.Token()
	if err != nil {
		return fail("%v", jsonErr(dec, err))
	}
	if tok != json.Delim('{') {
		return fail("entry is %s, want an object", jsonKind(tok))
	}
	var haveDType, haveShape, haveOffsets bool
	var offsets []int64
	for dec.More() {
		key, err := jsonKey(dec)
		if err != nil {
			return fail("%v", err)
		}
		switch key {
		case "dtype":
			if haveDType {
				return fail("duplicate field %q", key)
			}
			haveDType = true
			tok, err := dec.Token()
			if err != nil {
				return fail("dtype: %v", jsonErr(dec, err))
			}
			s, ok := tok.(string)
			if !ok {
				return fail("dtype is %s, want a string", jsonKind(tok))
			}
			if _, known := safetensorsDTypeBits[s]; !known {
				return fail("unknown dtype %q", s)
			}
			t.DType = s
		case "shape":
			if haveShape {
				return fail("duplicate field %q", key)
			}
			haveShape = true
			if t.Shape, err = jsonIntArray(dec, "shape"); err != nil {
				return fail("%v", err)
			}
			if t.Shape == nil {
				t.Shape = []int64{}
			}
		case "data_offsets":
			if haveOffsets {
				return fail("duplicate field %q", key)
			}
			haveOffsets = true
			if offsets, err = jsonIntArray(dec, "data_offsets"); err != nil {
				return fail("%v", err)
			}
			if len(offsets) != 2 {
				return fail("data_offsets has %d elements, want 2 ([begin, end])", len(offsets))
			}
			t.Begin, t.End = offsets[0], offsets[1]
		default:
			return fail("unknown field %q", key)
		}
	}
	if err := jsonExpectDelim(dec, '}', "entry"); err != nil {
		return fail("%v", err)
	}
	switch {
	case !haveDType:
		return fail("missing field \"dtype\"")
	case !haveShape:
		return fail("missing field \"shape\"")
	case !haveOffsets:
		return fail("missing field \"data_offsets\"")
	}
	if t.End < t.Begin {
		return fail("data_offsets [%d %d] end before they begin", t.Begin, t.End)
	}
	// Fold in order with overflow checks, as the reference implementation does.
	elems := int64(1)
	for _, d := range t.Shape {
		if d != 0 && elems > math.MaxInt64/d {
			return fail("shape %v overflows: too many elements", t.Shape)
		}
		elems *= d
	}
	bitsPer := safetensorsDTypeBits[t.DType]
	if elems > math.MaxInt64/bitsPer {
		return fail("shape %v of %s overflows: too many bytes", t.Shape, t.DType)
	}
	nbits := elems * bitsPer
	if nbits%8 != 0 {
		return fail("shape %v of %s is %d bits, not a whole number of bytes", t.Shape, t.DType, nbits)
	}
	if need := nbits / 8; t.End-t.Begin != need {
		return fail("data_offsets [%d %d] hold %d bytes but shape %v of %s needs %d",
			t.Begin, t.End, t.End-t.Begin, t.Shape, t.DType, need)
	}
	return t, nil
}

// checkSafetensorsLayout sorts tensors by their byte ranges and checks that
// the ranges tile [0, dataSize) exactly.
func checkSafetensorsLayout(tensors []TensorInfo, dataSize int64) error {
	sort.Slice(tensors, func(i, j int) bool {
		a, b := &tensors[i], &tensors[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		if a.End != b.End {
			return a.End < b.End
		}
		return a.Name < b.Name
	})
	var next int64
	for i, t := range tensors {
		switch {
		case t.Begin > next && i == 0:
			return fmt.Errorf("hole in data: bytes [0 %d) before tensor %q belong to no tensor", t.Begin, t.Name)
		case t.Begin > next:
			return fmt.Errorf("hole in data: bytes [%d %d) between tensor %q and tensor %q belong to no tensor",
				next, t.Begin, tensors[i-1].Name, t.Name)
		case t.Begin < next:
			return fmt.Errorf("tensor %q: data_offsets [%d %d] overlap tensor %q, which ends at %d",
				t.Name, t.Begin, t.End, tensors[i-1].Name, next)
		}
		next = t.End
	}
	switch {
	case next > dataSize:
		return fmt.Errorf("truncated: tensors need %d bytes of data but only %d follow the header", next, dataSize)
	case next < dataSize:
		return fmt.Errorf("%d bytes of data follow the header but tensors cover only %d (%d unreferenced trailing bytes)",
			dataSize, next, dataSize-next)
	}
	return nil
}

// jsonIntArray decodes an array of non-negative integers that fit in int64.
func jsonIntArray(dec *json.Decoder, what string) ([]int64, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, jsonErr(dec, err))
	}
	if tok != json.Delim('[') {
		return nil, fmt.Errorf("%s is %s, want an array of non-negative integers", what, jsonKind(tok))
	}
	var out []int64
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, jsonErr(dec, err))
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, fmt.Errorf("%s[%d] is %s, want a non-negative integer", what, len(out), jsonKind(tok))
		}
		s := num.String()
		for i := 0; i < len(s); i++ {
			if s[i] < '0' || s[i] > '9' {
				return nil, fmt.Errorf("%s[%d] is %s, want a non-negative integer", what, len(out), s)
			}
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s[%d] is %s, too large", what, len(out), s)
		}
		out = append(out, v)
	}
	if err := jsonExpectDelim(dec, ']', what); err != nil {
		return nil, err
	}
	return out, nil
}

// jsonKey reads an object key (the decoder only yields strings there).
func jsonKey(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", jsonErr(dec, err)
	}
	key, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("invalid JSON at byte %d: object key is %s", dec.InputOffset(), jsonKind(tok))
	}
	return key, nil
}

// jsonExpectDelim reads one token and requires it to be the delimiter want.
func jsonExpectDelim(dec *json.Decoder, want json.Delim, what string) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%s: %w", what, jsonErr(dec, err))
	}
	if tok != want {
		if want == '{' {
			return fmt.Errorf("%s is %s, want an object", what, jsonKind(tok))
		}
		return fmt.Errorf("%s: invalid JSON at byte %d: got %s, want %q", what, dec.InputOffset(), jsonKind(tok), string(want))
	}
	return nil
}

// jsonExpectEOF requires that nothing but whitespace follows the value.
func jsonExpectEOF(dec *json.Decoder) error {
	off := dec.InputOffset()
	_, err := dec.Token()
	if err == io.EOF {
		return nil
	}
	if err == nil || isJSONSyntaxError(err) {
		return fmt.Errorf("unexpected data after the JSON value at byte %d", off)
	}
	return err
}

func isJSONSyntaxError(err error) bool {
	var se *json.SyntaxError
	return errors.As(err, &se)
}

// jsonErr turns a Token error into one that says where the JSON broke.
func jsonErr(dec *json.Decoder, err error) error {
	if err == io.EOF {
		return fmt.Errorf("unexpected end of JSON at byte %d", dec.InputOffset())
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at byte %d: %w", se.Offset, err)
	}
	return err
}

// jsonKind names the kind of a Token value for error messages.
func jsonKind(tok json.Token) string {
	switch v := tok.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case json.Delim:
		switch v {
		case '{':
			return "an object"
		case '[':
			return "an array"
		}
		return fmt.Sprintf("%q", string(v))
	}
	return fmt.Sprintf("%T", tok)
}
