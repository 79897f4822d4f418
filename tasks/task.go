// Package tasks defines every task type Conveyor runs, once: its wire name,
// typed payload with validation, default options and handler. A small
// generic layer turns these definitions into *asynq.Task values (New) and
// asynq handlers (Mux), in the spirit of River's JobArgs/Worker[T].
//
// Producers (API, scheduler, outbox relay) and the worker read the same
// Registry, so a caller cannot enqueue a type no worker can run. Producers
// decode payloads strictly (unknown fields are errors); the worker decodes
// leniently, so producers can be upgraded first, but archives — no retries —
// a payload it cannot decode or validate.
package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/limits"
)

// Payload is what every task type's payload struct implements.
type Payload interface {
	// TypeName is the task type on the wire, e.g. "email:welcome".
	TypeName() string
	// Opts are the type's default options.
	Opts() Opts
	// Validate reports bad fields, preferably as FieldErrors.
	Validate() error
}

// Opts are a task type's defaults. Producers may override Queue, MaxRetry and
// Timeout per task; the retry curve stays the type's.
type Opts struct {
	Queue    string
	MaxRetry int
	Timeout  time.Duration
	// Retention is how long a completed task and its result stay in Redis:
	// NoRetention for fire-and-forget work, zero for the default
	// (TASK_RETENTION, DefaultRetention). See retention.go.
	Retention time.Duration
	// Retry delay n (0-based) is uniform in [0, min(RetryCap, RetryBase·2ⁿ)]:
	// exponential backoff with full jitter.
	RetryBase time.Duration
	RetryCap  time.Duration
	// Limits are the type's default flow control (rate, concurrency);
	// operators may override them at run time (see internal/limits).
	Limits limits.Limits
	// ExpiresIn, when set, is the default deadline of a task of this type,
	// counted from when it is built: a task not started by then is archived
	// as expired, never run. Producers may give their own (WithExpiry).
	ExpiresIn time.Duration
}

// Defaults for types that leave an option zero.
const (
	DefaultQueue     = "default"
	DefaultTimeout   = 30 * time.Minute
	DefaultRetention = 24 * time.Hour // for a type that declares none (TASK_RETENTION at producers)
	DefaultRetryBase = 10 * time.Second
	DefaultRetryCap  = time.Hour
)

func (o Opts) withDefaults() Opts {
	if o.Queue == "" {
		o.Queue = DefaultQueue
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.RetryBase == 0 {
		o.RetryBase = DefaultRetryBase
	}
	if o.RetryCap == 0 {
		o.RetryCap = DefaultRetryCap
	}
	return o
}

// Handler handles one decoded, validated payload. Return Permanent(err) for
// failures a retry cannot fix.
type Handler[P Payload] func(ctx context.Context, p P) error

// Permanent marks err as not worth retrying: the task is archived at once
// with err as its last error.
func Permanent(err error) error { return fmt.Errorf("%w (%w)", err, asynq.SkipRetry) }

// FieldErrors maps a field (its JSON name, e.g. "payload.user_id" or "spec")
// to what is wrong with it.
type FieldErrors map[string]string

func (f FieldErrors) Error() string {
	keys := slices.Sorted(maps.Keys(f))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ": " + f[k]
	}
	return "invalid fields: " + strings.Join(parts, "; ")
}

// ErrUnknownType is returned for a type that is not registered.
var ErrUnknownType = errors.New("unknown task type")

// Header keys carried by every task Conveyor enqueues.
const HeaderRequestID = "request_id"

// New validates p and builds its task with the type's default options
// followed by extra (later options win).
func New(p Payload, extra ...asynq.Option) (*asynq.Task, error) {
	return NewWithHeaders(p, nil, extra...)
}

// NewWithHeaders is New with task headers (for example the request ID of the
// API call that caused the task, so worker logs can be joined to it).
func NewWithHeaders(p Payload, headers map[string]string, extra ...asynq.Option) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", p.TypeName(), err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", p.TypeName(), err)
	}
	o := p.Opts().withDefaults()
	headers = withDefaultExpiry(headers, o.ExpiresIn)
	opts := append([]asynq.Option{
		asynq.Queue(o.Queue), asynq.MaxRetry(o.MaxRetry), asynq.Timeout(o.Timeout), asynq.Retention(o.retention(DefaultRetention)),
	}, extra...)
	return asynq.NewTaskWithHeaders(p.TypeName(), b, headers, opts...), nil
}

// decode unmarshals b into a P. strict rejects unknown fields; empty input
// and JSON null decode as the zero payload.
func decode[P Payload](b []byte, strict bool) (P, error) {
	var p P
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 || string(trimmed) == "null" || string(trimmed) == "{}" {
		return p, p.Validate()
	}
	if !strict {
		// The worker's path, once per task: Unmarshal, unlike a Decoder,
		// allocates nothing beyond the payload (trailing data is a syntax
		// error there too).
		if err := json.Unmarshal(trimmed, &p); err != nil {
			return p, decodeError(err)
		}
		return p, p.Validate()
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(&p); err != nil {
		return p, decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return p, FieldErrors{"payload": "must be a single JSON object"}
	}
	return p, p.Validate()
}

// decodeError turns encoding/json errors into FieldErrors naming the field.
func decodeError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return FieldErrors{"payload": "must be a JSON object"}
		}
		return FieldErrors{field: fmt.Sprintf("must be of type %s, not %s", typeErr.Type, typeErr.Value)}
	case errors.As(err, &syntaxErr):
		return FieldErrors{"payload": "is not valid JSON: " + syntaxErr.Error()}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return FieldErrors{name: "is not a field of this task type"}
	default:
		return FieldErrors{"payload": err.Error()}
	}
}

// Type describes one registered task type.
type Type struct {
	Name string
	Opts Opts // with defaults applied
	// Fields are the payload's top-level JSON field names (a limit's key
	// must be one of them).
	Fields []string
	// decode decodes and validates a payload: strictly for producers,
	// leniently for the worker.
	decode func(b []byte, strict bool) (Payload, error)
	// handler builds the asynq handler from the worker's dependencies.
	handler func(d Deps) asynq.Handler
}

// Define registers the payload type P with the maker of its handler. It is
// used once per type, in the registry list in registry.go.
func Define[P Payload](makeHandler func(d Deps) Handler[P]) Type {
	var zero P
	return Type{
		Name:   zero.TypeName(),
		Opts:   zero.Opts().withDefaults(),
		Fields: payloadFields(zero),
		decode: func(b []byte, strict bool) (Payload, error) {
			return decode[P](b, strict)
		},
		handler: func(d Deps) asynq.Handler {
			h := makeHandler(d)
			declared := zero.Opts().Retention
			return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
				p, err := decode[P](t.Payload(), false)
				if err != nil {
					return Permanent(fmt.Errorf("%s payload rejected: %w", t.Type(), err))
				}
				return h(withTask(ctx, t, keepsResult(declared, t)), p)
			})
		},
	}
}

// Registry is the set of known task types.
type Registry struct{ types map[string]Type }

// NewRegistry indexes types; a duplicate name is a programming error.
func NewRegistry(types ...Type) *Registry {
	r := &Registry{types: make(map[string]Type, len(types))}
	for _, t := range types {
		if _, dup := r.types[t.Name]; dup {
			panic("tasks: type registered twice: " + t.Name)
		}
		r.types[t.Name] = t
	}
	return r
}

// Lookup returns the type named name.
func (r *Registry) Lookup(name string) (Type, bool) {
	t, ok := r.types[name]
	return t, ok
}

// Names lists every registered type, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.types))
	for n := range r.types {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Decode decodes and validates a payload of type name the way producers do:
// unknown fields are rejected. The error is ErrUnknownType or FieldErrors.
func (r *Registry) Decode(name string, payload []byte) (Payload, error) {
	t, ok := r.types[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownType, name)
	}
	return t.decode(payload, true)
}

// DecodeStored decodes and validates a payload that was stored earlier (an
// outbox row): like the worker, it ignores unknown fields, which a payload
// written by an older version may carry. The error is ErrUnknownType or
// FieldErrors.
func (r *Registry) DecodeStored(name string, payload []byte) (Payload, error) {
	t, ok := r.types[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownType, name)
	}
	return t.decode(payload, false)
}

// RetryDelay implements asynq's RetryDelayFunc: exponential backoff with full
// jitter and a cap, per task type. base and max, when positive, replace every
// type's own base and cap (RETRY_BASE / RETRY_MAX, used to speed up tests).
// rnd returns a uniform number in [0, 1).
func (r *Registry) RetryDelay(base, max time.Duration, rnd func() float64) asynq.RetryDelayFunc {
	return func(n int, _ error, t *asynq.Task) time.Duration {
		o := Opts{}.withDefaults()
		if typ, ok := r.types[t.Type()]; ok {
			o = typ.Opts
		}
		if base > 0 {
			o.RetryBase = base
		}
		if max > 0 {
			o.RetryCap = max
		}
		return time.Duration(rnd() * float64(BackoffCeiling(n, o.RetryBase, o.RetryCap)))
	}
}

// BackoffCeiling is the largest delay before retry n (0-based):
// min(cap, base·2ⁿ), computed without overflow.
func BackoffCeiling(n int, base, cap time.Duration) time.Duration {
	d := base
	for i := 0; i < n; i++ {
		if d >= cap/2 {
			return cap
		}
		d *= 2
	}
	return min(d, cap)
}

func isPermanent(err error) bool { return errors.Is(err, asynq.SkipRetry) }
