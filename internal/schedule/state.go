package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis keys of the scheduler's shared state (besides LeaderKey).
const (
	// LastFiredKey is a hash: schedule name → last fired tick (Unix
	// seconds). A new leader catches up from there.
	LastFiredKey = "conveyor:scheduler:last_fired"
	// FileSchedulesKey holds the file entries the schedulers run (JSON), so
	// that the API can list them read-only and refuse their names.
	FileSchedulesKey = "conveyor:scheduler:file_schedules"
)

// recordScript sets a hash field to ARGV[1] only if that is larger than the
// current value: the last fired tick never moves backwards.
var recordScript = redis.NewScript(`
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
`)

// State is the scheduler's record in Redis of what has fired.
type State struct{ rdb redis.UniversalClient }

// NewState returns the state kept in rdb.
func NewState(rdb redis.UniversalClient) *State { return &State{rdb: rdb} }

// RecordFired notes that tick of name has been enqueued.
func (s *State) RecordFired(ctx context.Context, name string, tick time.Time) error {
	if err := recordScript.Run(ctx, s.rdb, []string{LastFiredKey}, name, tick.Unix()).Err(); err != nil {
		return fmt.Errorf("record last fired tick of %s: %w", name, err)
	}
	return nil
}

// LastFired returns the last fired tick of name, or zero if none is recorded.
func (s *State) LastFired(ctx context.Context, name string) (time.Time, error) {
	v, err := s.rdb.HGet(ctx, LastFiredKey, name).Result()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read last fired tick of %s: %w", name, err)
	}
	return parseUnix(v)
}

// AllLastFired returns every recorded last fired tick by name.
func (s *State) AllLastFired(ctx context.Context) (map[string]time.Time, error) {
	m, err := s.rdb.HGetAll(ctx, LastFiredKey).Result()
	if err != nil {
		return nil, fmt.Errorf("read last fired ticks: %w", err)
	}
	out := make(map[string]time.Time, len(m))
	for k, v := range m {
		if t, err := parseUnix(v); err == nil {
			out[k] = t
		}
	}
	return out, nil
}

// Forget drops the record of name (the schedule was deleted).
func (s *State) Forget(ctx context.Context, name string) error {
	if err := s.rdb.HDel(ctx, LastFiredKey, name).Err(); err != nil {
		return fmt.Errorf("forget schedule %s: %w", name, err)
	}
	return nil
}

// PublishFile stores the file entries for the API.
func (s *State) PublishFile(ctx context.Context, entries []*Entry) error {
	if entries == nil {
		entries = []*Entry{}
	}
	b, err := json.Marshal(entries)
	if err != nil {
		return fmt.Errorf("encode file schedules: %w", err)
	}
	if err := s.rdb.Set(ctx, FileSchedulesKey, b, 0).Err(); err != nil {
		return fmt.Errorf("publish file schedules: %w", err)
	}
	return nil
}

// FileEntries returns the file entries the schedulers published, not yet
// compiled (nil if no scheduler has published any).
func (s *State) FileEntries(ctx context.Context) ([]*Entry, error) {
	b, err := s.rdb.Get(ctx, FileSchedulesKey).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read file schedules: %w", err)
	}
	var out []*Entry
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("decode file schedules: %w", err)
	}
	return out, nil
}

func parseUnix(v string) (time.Time, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad tick %q: %w", v, err)
	}
	return time.Unix(n, 0).UTC(), nil
}
