package pack

import (
	"errors"
	"fmt"
	"io"
	"strconv"
)

// MaxJSONDepth is how deeply arrays and objects may nest in any JSON file
// pack reads (encoding/json's own limit for json.Valid and Unmarshal, far
// beyond what a config or tokenizer uses). Deeper is an error, not a stack
// that grows with the file.
const MaxJSONDepth = 10000

// MaxShardIndexSize is the largest *.safetensors.index.json or
// *.bin.index.json pack reads: the index is decoded into memory (about
// three times its size), and real ones are a few MiB for the largest
// models.
const MaxShardIndexSize = 64 << 20

// jsonValidBufSize is what checkJSON reads at a time: its memory, whatever
// the file holds.
const jsonValidBufSize = 64 << 10

// checkJSON checks that r holds exactly one JSON value (RFC 8259, as
// json.Valid accepts it), possibly surrounded by whitespace, nested at most
// MaxJSONDepth deep. It streams: memory is one 64 KiB buffer and one byte per
// level of nesting, whatever the size of the file or of any string in it.
// Errors say at which byte the JSON broke, as an offset from the start (as
// encoding/json's do).
func checkJSON(r io.Reader) error {
	v := &jsonValidator{r: r, buf: make([]byte, jsonValidBufSize)}
	return v.run()
}

type jsonValidator struct {
	r      io.Reader
	buf    []byte
	pos    int    // next byte in buf
	end    int    // bytes in buf
	off    int64  // stream offset of buf[0]
	err    error  // the reader's error once it has one
	nested []byte // '{' or '[' per open container
}

const jsonEOF = -1

// peek returns the next byte without consuming it, or jsonEOF at the end
// of input (v.err says whether that is io.EOF or a read error).
func (v *jsonValidator) peek() int {
	if v.pos < v.end {
		return int(v.buf[v.pos])
	}
	for v.err == nil {
		v.off += int64(v.end)
		v.pos, v.end = 0, 0
		var n int
		n, v.err = v.r.Read(v.buf)
		v.end = n
		if n > 0 {
			return int(v.buf[0])
		}
	}
	return jsonEOF
}

// at is the offset of the next byte: how many bytes come before it.
func (v *jsonValidator) at() int64 { return v.off + int64(v.pos) }

// fail reports the next byte as invalid (or the end of input) in context.
func (v *jsonValidator) fail(c int, context string) error {
	if c == jsonEOF {
		if v.err != io.EOF {
			return v.err
		}
		return fmt.Errorf("unexpected end of JSON at byte %d", v.at())
	}
	return fmt.Errorf("invalid JSON at byte %d: invalid character %s %s", v.at(), quoteJSONChar(byte(c)), context)
}

// space skips whitespace and returns the next byte, not consumed.
func (v *jsonValidator) space() int {
	for {
		c := v.peek()
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return c
		}
		v.pos++
	}
}

func (v *jsonValidator) run() error {
	if v.space() == jsonEOF {
		if v.err == io.EOF {
			return errors.New("no JSON value: the file is empty or all whitespace")
		}
		return v.err
	}
	for {
		// A value starts here.
		c := v.space()
		switch {
		case c == '{' || c == '[':
			if len(v.nested) >= MaxJSONDepth {
				return fmt.Errorf("invalid JSON at byte %d: nested deeper than %d levels", v.at(), MaxJSONDepth)
			}
			v.nested = append(v.nested, byte(c))
			v.pos++
			c = v.space()
			if c == '}' && v.nested[len(v.nested)-1] == '{' || c == ']' && v.nested[len(v.nested)-1] == '[' {
				v.pos++
				v.nested = v.nested[:len(v.nested)-1]
				break
			}
			if v.nested[len(v.nested)-1] == '{' {
				if err := v.key(c, "looking for beginning of object key string"); err != nil {
					return err
				}
			}
			continue
		case c == '"':
			if err := v.str(); err != nil {
				return err
			}
		case c == '-' || c >= '0' && c <= '9':
			if err := v.number(); err != nil {
				return err
			}
		case c == 't':
			if err := v.literal("true"); err != nil {
				return err
			}
		case c == 'f':
			if err := v.literal("false"); err != nil {
				return err
			}
		case c == 'n':
			if err := v.literal("null"); err != nil {
				return err
			}
		default:
			return v.fail(c, "looking for beginning of value")
		}
		// A value ended: what may follow it.
		for {
			if len(v.nested) == 0 {
				end := v.at()
				if c := v.space(); c != jsonEOF {
					return fmt.Errorf("unexpected data after the JSON value at byte %d", end)
				}
				if v.err != io.EOF {
					return v.err
				}
				return nil
			}
			top := v.nested[len(v.nested)-1]
			c = v.space()
			if c == ',' {
				v.pos++
				if top == '{' {
					if err := v.key(v.space(), "looking for beginning of object key string"); err != nil {
						return err
					}
				}
				break
			}
			if top == '{' && c == '}' || top == '[' && c == ']' {
				v.pos++
				v.nested = v.nested[:len(v.nested)-1]
				continue
			}
			if top == '{' {
				return v.fail(c, "after object key:value pair")
			}
			return v.fail(c, "after array element")
		}
	}
}

// key reads an object key (c, its first byte, not yet consumed) and the
// colon after it.
func (v *jsonValidator) key(c int, context string) error {
	if c != '"' {
		return v.fail(c, context)
	}
	if err := v.str(); err != nil {
		return err
	}
	if c := v.space(); c != ':' {
		return v.fail(c, "after object key")
	}
	v.pos++
	return nil
}

// str reads a string from its opening quote.
func (v *jsonValidator) str() error {
	v.pos++
	for {
		// The common case, in bulk: bytes that need no thought.
		b := v.buf[v.pos:v.end]
		i := 0
		for i < len(b) && b[i] >= 0x20 && b[i] != '"' && b[i] != '\\' {
			i++
		}
		v.pos += i
		c := v.peek()
		switch {
		case c == '"':
			v.pos++
			return nil
		case c == '\\':
			v.pos++
			e := v.peek()
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				v.pos++
			case 'u':
				v.pos++
				for range 4 {
					h := v.peek()
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return v.fail(h, "in \\u hexadecimal character escape")
					}
					v.pos++
				}
			default:
				return v.fail(e, "in string escape code")
			}
		case c == jsonEOF:
			return v.fail(c, "")
		case c < 0x20:
			return v.fail(c, "in string literal")
		}
	}
}

// number reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (v *jsonValidator) number() error {
	c := v.peek()
	if c == '-' {
		v.pos++
		c = v.peek()
	}
	switch {
	case c == '0':
		v.pos++
	case c >= '1' && c <= '9':
		v.digits()
	default:
		return v.fail(c, "in numeric literal")
	}
	if v.peek() == '.' {
		v.pos++
		if c := v.peek(); c < '0' || c > '9' {
			return v.fail(c, "after decimal point in numeric literal")
		}
		v.digits()
	}
	if c := v.peek(); c == 'e' || c == 'E' {
		v.pos++
		if c := v.peek(); c == '+' || c == '-' {
			v.pos++
		}
		if c := v.peek(); c < '0' || c > '9' {
			return v.fail(c, "in exponent of numeric literal")
		}
		v.digits()
	}
	return nil
}

func (v *jsonValidator) digits() {
	for c := v.peek(); c >= '0' && c <= '9'; c = v.peek() {
		v.pos++
	}
}

// literal reads true, false or null.
func (v *jsonValidator) literal(word string) error {
	for i := 0; i < len(word); i++ {
		if c := v.peek(); c != int(word[i]) {
			return v.fail(c, fmt.Sprintf("in literal %s (expecting %s)", word, quoteJSONChar(word[i])))
		}
		v.pos++
	}
	return nil
}

// quoteJSONChar formats c as encoding/json's syntax errors do.
func quoteJSONChar(c byte) string {
	switch c {
	case '\'':
		return `'\''`
	case '"':
		return `'"'`
	}
	s := strconv.Quote(string(rune(c)))
	return "'" + s[1:len(s)-1] + "'"
}
