package limits

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/redis/go-redis/v9"
)

// overridesKey is the Redis hash of operators' overrides: field
// "<type>|rate" or "<type>|concurrency", value the part's JSON or "null"
// (that kind of limit removed). A type without fields uses its code
// defaults. One key, so it lives on one node of a cluster.
const overridesKey = "conveyor:limits:overrides"

// Store reads and writes limits: code defaults per type, overridden by what
// operators stored in Redis.
type Store struct {
	rdb      redis.UniversalClient
	defaults map[string]Limits
}

// NewStore keeps overrides in rdb; defaults are the types' code defaults
// (every known type should have an entry, zero when it has no limits).
func NewStore(rdb redis.UniversalClient, defaults map[string]Limits) *Store {
	return &Store{rdb: rdb, defaults: defaults}
}

// Defaults returns the code defaults of taskType.
func (s *Store) Defaults(taskType string) Limits { return s.defaults[taskType] }

// All returns the effective limits of every type with defaults or
// overrides.
func (s *Store) All(ctx context.Context) (map[string]Limits, error) {
	raw, err := s.rdb.HGetAll(ctx, overridesKey).Result()
	if err != nil {
		return nil, fmt.Errorf("read limit overrides: %w", err)
	}
	out := make(map[string]Limits, len(s.defaults))
	for typ, l := range s.defaults {
		out[typ] = l
	}
	// Sorted, so that a bad field is reported the same way every time.
	fields := make([]string, 0, len(raw))
	for f := range raw {
		fields = append(fields, f)
	}
	sort.Strings(fields)
	for _, f := range fields {
		typ, part, ok := strings.Cut(f, "|")
		if !ok {
			continue
		}
		l := out[typ]
		if err := applyPart(&l, part, raw[f]); err != nil {
			return nil, fmt.Errorf("limit override %s: %w", f, err)
		}
		out[typ] = l
	}
	return out, nil
}

// Get returns the effective limits of taskType.
func (s *Store) Get(ctx context.Context, taskType string) (Limits, error) {
	vals, err := s.rdb.HMGet(ctx, overridesKey, taskType+"|"+KindRate, taskType+"|"+KindConcurrency).Result()
	if err != nil {
		return Limits{}, fmt.Errorf("read limit overrides of %s: %w", taskType, err)
	}
	l := s.defaults[taskType]
	for i, part := range []string{KindRate, KindConcurrency} {
		v, ok := vals[i].(string)
		if !ok {
			continue
		}
		if err := applyPart(&l, part, v); err != nil {
			return Limits{}, fmt.Errorf("limit override %s|%s: %w", taskType, part, err)
		}
	}
	return l, nil
}

// Put stores the parts p sets as overrides of taskType and returns the
// effective limits.
func (s *Store) Put(ctx context.Context, taskType string, p Patch) (Limits, error) {
	var kv []any
	if p.RateSet {
		b, _ := json.Marshal(p.Rate) // "null" when removed
		kv = append(kv, taskType+"|"+KindRate, string(b))
	}
	if p.ConcurrencySet {
		b, _ := json.Marshal(p.Concurrency)
		kv = append(kv, taskType+"|"+KindConcurrency, string(b))
	}
	if len(kv) > 0 {
		if err := s.rdb.HSet(ctx, overridesKey, kv...).Err(); err != nil {
			return Limits{}, fmt.Errorf("store limits of %s: %w", taskType, err)
		}
	}
	return s.Get(ctx, taskType)
}

// Reset drops the overrides of taskType: its code defaults apply again.
func (s *Store) Reset(ctx context.Context, taskType string) (Limits, error) {
	if err := s.rdb.HDel(ctx, overridesKey, taskType+"|"+KindRate, taskType+"|"+KindConcurrency).Err(); err != nil {
		return Limits{}, fmt.Errorf("reset limits of %s: %w", taskType, err)
	}
	return s.defaults[taskType], nil
}

func applyPart(l *Limits, part, v string) error {
	switch part {
	case KindRate:
		var r *Rate
		if err := json.Unmarshal([]byte(v), &r); err != nil {
			return err
		}
		l.Rate = r
	case KindConcurrency:
		var c *Concurrency
		if err := json.Unmarshal([]byte(v), &c); err != nil {
			return err
		}
		l.Concurrency = c
	}
	return nil
}
