package httpapi

import (
	"encoding/json"
	"reflect"
	"testing"
)

// mayHoldNonText lets bind skip the walk over a decoded body: it must never
// say false for a body that decodes to a string that is not text.
func TestMayHoldNonText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		raw  string
		want bool
	}{
		{"plain", `{"type":"system:ping","payload":{}}`, false},
		{"text escapes", `{"a":"line\nline\r\t\"q\" \/ \\"}`, false},
		{"escaped backslash before a b", `{"a":"\\b"}`, false},
		{"unicode escape", `{"a":"\u00e9"}`, true},
		{"NUL escape", `{"a":"\u0000"}`, true},
		{"backspace escape", `{"a":"a\bb"}`, true},
		{"form feed escape", `{"a":"\f"}`, true},
		{"backspace in a key", `{"a\b":1}`, true},
		{"raw C1 control", "{\"a\":\"\u0085\"}", true},
		{"raw noncharacter", "{\"a\":\"\uffff\"}", true},
		{"trailing backslash", `{"a":"x\`, false},
		{"empty", ``, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := mayHoldNonText([]byte(tt.raw)); got != tt.want {
				t.Fatalf("mayHoldNonText(%q) = %v, want %v", tt.raw, got, tt.want)
			}
		})
	}
}

// Whatever the fast path says, a body whose strings are not all text is
// refused: false from mayHoldNonText must mean the walk finds nothing.
func FuzzMayHoldNonText(f *testing.F) {
	for _, s := range []string{`{"a":"\b"}`, `{"a":"\\u0000"}`, `{"a\f":1}`, `["\u001b"]`, `"plain"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var v any
		if json.Unmarshal([]byte(raw), &v) != nil {
			return
		}
		fields := map[string]string{}
		checkText(reflect.ValueOf(&v).Elem(), "", fields)
		if len(fields) > 0 && !mayHoldNonText([]byte(raw)) {
			t.Fatalf("%q holds non-text %v, but mayHoldNonText says no", raw, fields)
		}
	})
}
