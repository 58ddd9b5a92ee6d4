package pack

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestCheckJSON(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, tc := range []struct{ in, want string }{
		{`{"a": [1, -0.5e+3, 2E7, true, false, null, {"b": "c\"\\\/\b\f\n\r\t\u00e9"}], "": {}}`, ""},
		{" \n\t\r[]\n", ""},
		{`"only a string"`, ""},
		{"0", ""},
		{deep(MaxJSONDepth), ""},
		{deep(MaxJSONDepth + 1), "invalid JSON at byte 10000: nested deeper than 10000 levels"},
		{"", "no JSON value: the file is empty or all whitespace"},
		{" \n ", "no JSON value"},
		{`{"hidden_size": 8,}`, "invalid JSON at byte 18: invalid character '}' looking for beginning of object key string"},
		{`{"a": 1`, "unexpected end of JSON at byte 7"},
		{`{"a" 1}`, "invalid JSON at byte 5: invalid character '1' after object key"},
		{`{"a": 1 "b"}`, "invalid JSON at byte 8: invalid character '\"' after object key:value pair"},
		{`[1 2]`, "invalid JSON at byte 3: invalid character '2' after array element"},
		{`[01]`, "invalid JSON at byte 2: invalid character '1' after array element"},
		{`[1.]`, "invalid JSON at byte 3: invalid character ']' after decimal point in numeric literal"},
		{`[1e]`, "invalid JSON at byte 3: invalid character ']' in exponent of numeric literal"},
		{`[-]`, "invalid JSON at byte 2: invalid character ']' in numeric literal"},
		{`[tru]`, "invalid JSON at byte 4: invalid character ']' in literal true (expecting 'e')"},
		{`["a` + "\x01" + `"]`, `invalid JSON at byte 3: invalid character '\x01' in string literal`},
		{`["\x"]`, "invalid JSON at byte 3: invalid character 'x' in string escape code"},
		{`["\u12g4"]`, "invalid JSON at byte 6: invalid character 'g' in \\u hexadecimal character escape"},
		{`["abc`, "unexpected end of JSON at byte 5"},
		{"{\"do_sample\": true}\n}", "unexpected data after the JSON value at byte 19"},
		{"{} {}", "unexpected data after the JSON value at byte 2"},
		{`'a'`, `invalid JSON at byte 0: invalid character '\'' looking for beginning of value`},
		{`{]`, "invalid JSON at byte 1: invalid character ']' looking for beginning of object key string"},
		{`[}`, "invalid JSON at byte 1: invalid character '}' looking for beginning of value"},
	} {
		for name, r := range map[string]io.Reader{"whole": strings.NewReader(tc.in), "one byte at a time": iotest.OneByteReader(strings.NewReader(tc.in))} {
			err := checkJSON(r)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("checkJSON(%.40q), %s: %v", tc.in, name, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("checkJSON(%.40q), %s: %v, want %q", tc.in, name, err, tc.want)
			}
		}
		if valid := json.Valid([]byte(tc.in)); valid != (tc.want == "") {
			t.Errorf("json.Valid(%.40q) = %v: the table disagrees with encoding/json", tc.in, valid)
		}
	}
}

// TestCheckJSONReadError: a read error is returned as it is, not as a
// syntax error.
func TestCheckJSONReadError(t *testing.T) {
	boom := io.ErrClosedPipe
	for _, in := range []string{"", `{"a": `, `"abc`, "[1"} {
		if err := checkJSON(io.MultiReader(strings.NewReader(in), iotest.ErrReader(boom))); err != boom {
			t.Errorf("checkJSON(%q then a read error) = %v, want %v", in, err, boom)
		}
	}
}

// FuzzCheckJSON: checkJSON accepts exactly what json.Valid accepts, read
// whole or in pieces of every size across its buffer's refills.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range []string{`{"a": [1, -2.5e-3, true, null, "x\u00e9\n"]}`, `[[[]]]`, `{"a" 1}`, `"\x"`, ` 0 `, `01`, `-`, `1.e5`,
		`[` + strings.Repeat(`"a",`, 5000) + `1]`, strings.Repeat("[", 10001), "{\"a\":\"\xff\"}", ""} {
		f.Add([]byte(s), uint16(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16) {
		want := json.Valid(data)
		var r io.Reader = bytes.NewReader(data)
		if chunk > 0 {
			r = &chunkReader{data: data, n: int(chunk)}
		}
		err := checkJSON(r)
		if (err == nil) != want {
			t.Fatalf("checkJSON(%q) = %v, json.Valid = %v", data, err, want)
		}
	})
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	data []byte
	n    int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), c.n, len(c.data))
	copy(p, c.data[:k])
	c.data = c.data[k:]
	return k, nil
}

// BenchmarkCheckJSON compares the streaming check with json.Valid on a
// tokenizer-like file held in memory.
func BenchmarkCheckJSON(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteString(`{"model": {"vocab": {`)
	for i := range 300000 {
		if i > 0 {
			buf.WriteString(", ")
		}
		buf.WriteString(`"tok\u0120en` + strings.Repeat("x", i%13) + `": ` + strings.Repeat("7", 1+i%6))
	}
	buf.WriteString(`}, "merges": [1.5e3, -2, true, null]}}`)
	data := buf.Bytes()
	b.Run("checkJSON", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if err := checkJSON(bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if !json.Valid(data) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("Decoder.Token", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			dec := json.NewDecoder(bytes.NewReader(data))
			for {
				if _, err := dec.Token(); err == io.EOF {
					break
				} else if err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
