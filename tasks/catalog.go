package tasks

import (
	"reflect"
	"sort"
	"strings"

	"github.com/conveyor-run/conveyor/internal/limits"
)

// Types lists every registered type, sorted by name (the task-type
// catalog).
func (r *Registry) Types() []Type {
	out := make([]Type, 0, len(r.types))
	for _, n := range r.Names() {
		out = append(out, r.types[n])
	}
	return out
}

// DefaultLimits returns every type's code-default limits (zero: none).
func (r *Registry) DefaultLimits() map[string]limits.Limits {
	out := make(map[string]limits.Limits, len(r.types))
	for n, t := range r.types {
		out[n] = t.Opts.Limits
	}
	return out
}

// payloadFields lists the top-level JSON field names of p's struct: the
// payload fields a limit may be keyed by.
func payloadFields(p Payload) []string {
	rt := reflect.TypeOf(p)
	for rt != nil && rt.Kind() == reflect.Pointer {
		rt = rt.Elem()
	}
	if rt == nil || rt.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for i := range rt.NumField() {
		f := rt.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}
