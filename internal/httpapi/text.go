package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
)

// Text rules: every string a request carries (JSON fields and keys, path and
// query parameters) must be text. NUL cannot be stored by PostgreSQL (a
// 500 if it got that far), and other control characters and Unicode
// noncharacters only ever arrive from attacks or broken clients: they
// corrupt logs, emails and terminals. Tab, LF and CR are text.

// badRune reports whether r may not appear in a request's text.
func badRune(r rune) bool {
	switch {
	case r == '\t' || r == '\n' || r == '\r':
		return false
	case r < 0x20 || (r >= 0x7f && r <= 0x9f): // C0, DEL, C1 controls
		return true
	case r >= 0xfdd0 && r <= 0xfdef, r&0xfffe == 0xfffe: // noncharacters
		return true
	}
	return false
}

// textProblem says what is wrong with s, or "" when it is text.
func textProblem(s string) string {
	for _, r := range s {
		if badRune(r) {
			if r == 0 {
				return "must not contain NUL characters"
			}
			return fmt.Sprintf("must not contain control or non-text characters (found %U)", r)
		}
	}
	return ""
}

// checkText walks a decoded request value (structs by their JSON names,
// maps, slices, json.RawMessage) and records each string that is not text
// in fields under its JSON path, such as items[0].sku or payload.note.
func checkText(v reflect.Value, path string, fields map[string]string) {
	if len(fields) >= 10 { // enough to tell the caller
		return
	}
	if v.Type() == reflect.TypeOf(json.RawMessage(nil)) {
		checkRawText(v.Bytes(), path, fields)
		return
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			checkText(v.Elem(), path, fields)
		}
	case reflect.String:
		if msg := textProblem(v.String()); msg != "" {
			fields[path] = msg
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if (f.Anonymous && f.Tag.Get("json") == "") || f.Tag.Get("text") == "inline" {
				checkText(v.Field(i), path, fields)
				continue
			}
			checkText(v.Field(i), joinPath(path, name), fields)
		}
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Uint8 {
			return // []byte: not text
		}
		for i := range v.Len() {
			checkText(v.Index(i), fmt.Sprintf("%s[%d]", path, i), fields)
		}
	case reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			k := fmt.Sprint(iter.Key().Interface())
			if msg := textProblem(k); msg != "" {
				fields[joinPath(path, strings.ToValidUTF8(strings.Map(safeRune, k), "?"))] = "key " + msg
				continue
			}
			checkText(iter.Value(), joinPath(path, k), fields)
		}
	}
}

// checkRawText checks the strings of a JSON value kept raw (a task's
// payload) as they will be decoded later.
func checkRawText(raw []byte, path string, fields map[string]string) {
	if !mayHoldNonText(raw) {
		return
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return // malformed: the decoder that uses it will say so
	}
	checkText(reflect.ValueOf(&v).Elem(), path, fields)
}

// mayHoldNonText reports whether JSON text raw might decode to a string
// that is not text: only a bad rune written as is, or an escape that makes
// one (\u…, and \b and \f, which decode to control characters), can.
// False means no string in raw needs checking.
func mayHoldNonText(raw []byte) bool {
	for i := 0; ; i++ {
		j := bytes.IndexByte(raw[i:], '\\')
		if j < 0 || i+j+1 >= len(raw) {
			break
		}
		i += j + 1
		switch raw[i] {
		case 'u', 'b', 'f':
			return true
		}
	}
	return hasBadByte(raw)
}

func hasBadByte(b []byte) bool {
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if badRune(r) {
			return true
		}
		b = b[n:]
	}
	return false
}

// safeRune replaces what may not be echoed back in a field name.
func safeRune(r rune) rune {
	if badRune(r) {
		return '?'
	}
	return r
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// textParams refuses path and query parameters that are not text: a path
// parameter cannot name anything that exists (404), a query parameter is a
// 422 naming it.
func textParams(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		for _, v := range c.ParamValues() {
			if textProblem(v) != "" {
				return errNotFound("resource")
			}
		}
		if c.QueryString() == "" {
			return next(c)
		}
		fields := map[string]string{}
		for name, vs := range c.QueryParams() {
			if msg := textProblem(name); msg != "" {
				fields[strings.Map(safeRune, name)] = "parameter name " + msg
				continue
			}
			for _, v := range vs {
				if msg := textProblem(v); msg != "" {
					fields[name] = msg
				}
			}
		}
		if len(fields) > 0 {
			return errValidation(fields)
		}
		return next(c)
	}
}
