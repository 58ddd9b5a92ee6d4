package measure

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// Events that stress the fast parser: escapes, brackets and quotes inside
// strings, numbers, nulls, nesting, no whitespace, an escaped key.
var trickyEvents = []string{
	`{"apiVersion":"v1","kind":"Event","metadata":{"name":"a.1","namespace":"x","uid":"u1","annotations":{"k":"}{][\",:"}},"involvedObject":{"kind":"Pod","namespace":"x","name":"a","uid":"p1","fieldPath":"spec.containers{c}"},"reason":"Pulled","message":"Successfully pulled image \"r/i:v1\" in 1.5s (2s including waiting). Image size: 10 bytes.","source":{"component":"kubelet","host":"n"},"firstTimestamp":"2025-03-14T10:00:00Z","lastTimestamp":"2025-03-14T10:00:01Z","count":3,"eventTime":null}`,
	`{ "regarding" : { "kind" : "Pod" , "name" : "b" } , "note" : "tab\tnewline\nslash\/back\\\\\"q\" é \u00e9 \ud83d\ude00" , "reason" : "Nominated", "reportingController":"karpenter","deprecatedCount":2,"deprecatedFirstTimestamp":"2025-03-14T10:00:00+02:00","deprecatedSource":{"component":"x"},"eventTime":"2025-03-14T10:00:00.123456Z","series":{"count":2,"lastObservedTime":"2025-03-14T10:00:09.000000Z"},"extra":[1,-2.5e10,true,false,null,[{"a":[]}],"]"]}`,
	`{"involvedObject":null,"regarding":{"kind":"Node","name":"n"},"metadata":{},"source":null,"count":null,"message":null,"reas\u006fn":"Starting","firstTimestamp":"2025-03-14T10:00:00Z"}`,
	"{\n\t\"reason\":\"x\\\\\",\r\n\"involvedObject\":{\"kind\":\"Pod\",\"name\":\"c\\\\\"},\"firstTimestamp\":\"2025-03-14T10:00:00Z\"}",
}

// TestParseEventMatchesEncodingJSON: on every fixture event and the tricky
// ones, the fast parser reads exactly what encoding/json reads.
func TestParseEventMatchesEncodingJSON(t *testing.T) {
	var items [][]byte
	for name := range expected {
		f, err := os.Open(filepath.Join(fixtures, name, EventsFile))
		if err != nil {
			t.Fatal(err)
		}
		err = splitItems(f, func(_ int, _ int64, b []byte) error {
			items = append(items, bytes.Clone(b))
			return nil
		})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range trickyEvents {
		items = append(items, []byte(s))
	}
	ep := newEventParser()
	for _, it := range items {
		var want, got rawEvent
		if err := json.Unmarshal(it, &want); err != nil {
			t.Fatalf("encoding/json: %v\n%s", err, it)
		}
		if err := ep.parse(it, &got); err != nil {
			t.Fatalf("parse: %v\n%s", err, it)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("parse differs from encoding/json:\n got %+v\nwant %+v\n%s", got, want, it)
		}
	}
}

// TestSplitterBoundaries: reading one byte at a time (every value, string
// and escape split across refills) gives the same events.
func TestSplitterBoundaries(t *testing.T) {
	doc := `{"kind":"List","items":[` + strings.Join(trickyEvents, ",") + `]}` + "\n" + trickyEvents[0] + `{"kind":"EventList","items":null}`
	want, err := DecodeEvents(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 4 { // the bare copy of the first event has its uid
		t.Fatalf("%d events, want 4", len(want))
	}
	got, err := DecodeEvents(iotest.OneByteReader(strings.NewReader(doc)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("one byte at a time:\n%+v\nwant\n%+v", got, want)
	}
	if got[1].Message != "tab\tnewline\nslash/back\\\\\"q\" é é 😀" {
		t.Errorf("unescaped %q", got[1].Message)
	}

	dir := t.TempDir()
	writeEventsBundle(t, dir, 300)
	data, err := os.ReadFile(filepath.Join(dir, EventsFile))
	if err != nil {
		t.Fatal(err)
	}
	a, err := DecodeEvents(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	b, err := DecodeEvents(iotest.HalfReader(iotest.OneByteReader(bytes.NewReader(data))))
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 300 || !reflect.DeepEqual(a, b) {
		t.Errorf("generated events differ when read in small pieces (%d, %d)", len(a), len(b))
	}
}

func TestSplitterErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`[1,2]`, `at byte 0: want a JSON object`},
		{`{"items":[{"a":1}`, `item 1: truncated JSON`},
		{`{"items":[{"a":1} {"b":2}]}`, `item 1: at byte 18: want "," or "]"`},
		{`{"items":[{"a":"x}]}`, `item 0: truncated JSON`},
		{`{"items" 1}`, `want ":"`},
		{`{"items":{}}`, `want an items array`},
		{`{"a":1]`, `want "," or "}", got ']'`},
	} {
		err := splitItems(strings.NewReader(tc.in), func(int, int64, []byte) error { return nil })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.in, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{`{"reason":1}`, `reason: at byte +10: want a string`},
		{`{"count":"3"}`, `count: at byte +9: want a whole number`},
		{`{"eventTime":"yesterday"}`, `eventTime: at byte +24: parsing time`},
		{`{"involvedObject":[]}`, `involvedObject: at byte +18: want an object`},
	} {
		var e rawEvent
		err := newEventParser().parse([]byte(tc.in), &e)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.in, err, tc.want)
		}
	}
}
