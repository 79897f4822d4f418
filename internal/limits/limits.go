// Package limits is Conveyor's flow control: rate limits (GCRA, with a
// burst) and concurrency limits, for a task type as a whole or per value of
// one top-level payload field, kept in Redis so that every worker process
// together respects them.
//
// The worker asks an Enforcer before a handler runs. A task over a limit is
// not run: it goes back to asynq's retry set with a Throttled error, which
// the worker tells asynq is not a failure (no retry is spent) and whose
// RetryAfter becomes the retry delay, so the task waits in Redis, not in a
// worker slot. Concurrency slots are leases refreshed while the handler
// runs: the slot of a worker that dies frees itself within LeaseTTL.
//
// A type's limits are its code default (tasks.Opts.Limits) unless an
// operator stored an override (PUT /api/v1/task-types/{type}/limits); every
// worker re-reads the overrides every SyncInterval.
package limits

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Limits are the flow-control settings of one task type. A nil part means
// no limit of that kind.
type Limits struct {
	Rate        *Rate        `json:"rate"`
	Concurrency *Concurrency `json:"concurrency"`
}

// Rate allows Limit task starts per Per, with up to Burst of them at once
// (GCRA: in any window of length W at most Burst + Limit·W/Per start).
type Rate struct {
	Limit int      `json:"limit"`
	Per   Duration `json:"per"`
	// Burst defaults to Limit.
	Burst int `json:"burst"`
	// Key, when set, names a top-level payload field: the limit then holds
	// per value of that field (per user, per merchant), not for the type.
	Key string `json:"key,omitempty"`
}

// Concurrency allows at most Max tasks running at once, for the type or,
// with Key, per value of that payload field.
type Concurrency struct {
	Max int    `json:"max"`
	Key string `json:"key,omitempty"`
}

// Bounds of what an operator may set.
const (
	MinPer   = 100 * time.Millisecond
	MaxPer   = 24 * time.Hour
	MaxLimit = 1_000_000
	// minEmission bounds the rate (10000/s): the script keeps times in
	// whole microseconds.
	minEmission = 100 * time.Microsecond
)

// IsZero reports whether l limits nothing.
func (l Limits) IsZero() bool { return l.Rate == nil && l.Concurrency == nil }

// emission is the GCRA emission interval: the time one start "costs".
func (r Rate) emission() time.Duration { return r.Per.D() / time.Duration(r.Limit) }

func (r Rate) burst() int {
	if r.Burst <= 0 {
		return r.Limit
	}
	return r.Burst
}

func (r Rate) String() string {
	s := fmt.Sprintf("%d per %s (burst %d)", r.Limit, r.Per, r.burst())
	if r.Key != "" {
		s += " per " + r.Key
	}
	return s
}

func (c Concurrency) String() string {
	s := fmt.Sprintf("%d at once", c.Max)
	if c.Key != "" {
		s += " per " + c.Key
	}
	return s
}

// Duration is a time.Duration that reads and writes JSON as "1s", "1m".
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON implements json.Unmarshaler: a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &durationError{`must be a duration string such as "1s" or "1m"`}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return &durationError{fmt.Sprintf(`must be a duration such as "1s", "1m" or "1h", not %q`, s)}
	}
	*d = Duration(v)
	return nil
}

// FieldErrors maps a field of a limits body (e.g. "rate.per") to what is
// wrong with it.
type FieldErrors map[string]string

func (f FieldErrors) Error() string {
	parts := make([]string, 0, len(f))
	for k, v := range f {
		parts = append(parts, k+": "+v)
	}
	return "invalid limits: " + strings.Join(parts, "; ")
}

// Validate checks l; fields says which payload field names a key may use
// (nil: any). Errors are FieldErrors named like the JSON ("rate.per").
func (l Limits) Validate(fields []string) error {
	bad := FieldErrors{}
	keyOK := func(k string) bool {
		if fields == nil {
			return true
		}
		for _, f := range fields {
			if f == k {
				return true
			}
		}
		return false
	}
	if r := l.Rate; r != nil {
		if r.Limit < 1 || r.Limit > MaxLimit {
			bad["rate.limit"] = fmt.Sprintf("must be between 1 and %d", MaxLimit)
		}
		if r.Per.D() < MinPer || r.Per.D() > MaxPer {
			bad["rate.per"] = fmt.Sprintf("must be between %s and %s", MinPer, MaxPer)
		}
		if r.Limit >= 1 && r.Per.D() >= MinPer && r.emission() < minEmission {
			bad["rate.limit"] = fmt.Sprintf("must be at most %d per second", time.Second/minEmission)
		}
		if r.Burst < 0 || r.Burst > MaxLimit {
			bad["rate.burst"] = fmt.Sprintf("must be between 1 and %d (0 or absent: the limit)", MaxLimit)
		}
		if r.Key != "" && !keyOK(r.Key) {
			bad["rate.key"] = fmt.Sprintf("%q is not a top-level payload field of this task type (fields: %s)", r.Key, strings.Join(fields, ", "))
		}
	}
	if c := l.Concurrency; c != nil {
		if c.Max < 1 || c.Max > MaxLimit {
			bad["concurrency.max"] = fmt.Sprintf("must be between 1 and %d", MaxLimit)
		}
		if c.Key != "" && !keyOK(c.Key) {
			bad["concurrency.key"] = fmt.Sprintf("%q is not a top-level payload field of this task type (fields: %s)", c.Key, strings.Join(fields, ", "))
		}
	}
	if len(bad) > 0 {
		return bad
	}
	return nil
}

// Patch is a PUT body: a part that is absent leaves the current setting,
// null removes that kind of limit (even a code default), an object sets it.
type Patch struct {
	Rate           *Rate
	RateSet        bool
	Concurrency    *Concurrency
	ConcurrencySet bool
}

// Apply returns l changed by p.
func (p Patch) Apply(l Limits) Limits {
	if p.RateSet {
		l.Rate = p.Rate
	}
	if p.ConcurrencySet {
		l.Concurrency = p.Concurrency
	}
	return l
}

// ErrBody is a PUT body that is not one JSON object.
var ErrBody = errors.New("the body must be one JSON object with rate and/or concurrency")

// ParsePatch decodes a PUT body strictly (unknown fields are errors) and
// validates it against the type's payload fields. Errors are ErrBody or
// FieldErrors.
func ParsePatch(body []byte, fields []string) (Patch, error) {
	var raw map[string]json.RawMessage
	if err := strictDecode(body, &raw); err != nil || raw == nil {
		return Patch{}, ErrBody
	}
	var p Patch
	bad := FieldErrors{}
	for name, v := range raw {
		isNull := bytes.Equal(bytes.TrimSpace(v), []byte("null"))
		switch name {
		case "rate":
			p.RateSet = true
			if !isNull {
				p.Rate = new(Rate)
				if err := strictDecode(v, p.Rate); err != nil {
					bad.add("rate", err)
				}
			}
		case "concurrency":
			p.ConcurrencySet = true
			if !isNull {
				p.Concurrency = new(Concurrency)
				if err := strictDecode(v, p.Concurrency); err != nil {
					bad.add("concurrency", err)
				}
			}
		default:
			bad[name] = "is not a field of limits (rate, concurrency)"
		}
	}
	if len(bad) > 0 {
		return Patch{}, bad
	}
	if err := (Limits{Rate: p.Rate, Concurrency: p.Concurrency}).Validate(fields); err != nil {
		return Patch{}, err
	}
	return p, nil
}

// add records a decode error of the part named prefix under the field it
// names.
func (f FieldErrors) add(prefix string, err error) {
	var typeErr *json.UnmarshalTypeError
	var durErr *durationError
	msg := err.Error()
	switch {
	case errors.As(err, &durErr):
		f[prefix+".per"] = durErr.msg
	case errors.As(err, &typeErr) && typeErr.Field != "":
		f[prefix+"."+typeErr.Field] = fmt.Sprintf("must be of type %s, not %s", typeErr.Type, typeErr.Value)
	case strings.HasPrefix(msg, "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(msg, "json: unknown field "), `"`)
		f[prefix+"."+name] = "is not a field of " + prefix
	default:
		f[prefix] = "must be an object or null: " + msg
	}
}

func strictDecode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("must be a single JSON value")
	}
	return nil
}

// durationError is a bad "per" (the only duration in a limits body).
type durationError struct{ msg string }

func (e *durationError) Error() string { return e.msg }
