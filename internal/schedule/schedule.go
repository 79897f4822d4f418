// Package schedule is the beat: it turns cron entries into enqueued tasks,
// exactly once per tick, however many scheduler replicas run.
//
// Entries come from two sources: the YAML file (read-only, reloaded on
// SIGHUP) and the schedules table (edited through the API, synced every
// SCHEDULE_SYNC_INTERVAL and on a PostgreSQL notification); see Syncer. The
// engine computes each entry's ticks itself with robfig/cron's parser rather
// than running cron.Cron, because every fire must know the exact tick it
// belongs to: the task ID is schedule:<name>:<tick unix seconds>, so however
// many times a tick is attempted (restarts, failover, two leaders for a
// moment) asynq accepts it once. Only the holder of the Redis leader Lease
// fires; the last fired tick of each schedule is kept in Redis so that a new
// leader catches up the ticks it missed inside the catch-up window, and no
// others.
package schedule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

// Sources of entries.
const (
	SourceFile     = "file"
	SourceDatabase = "database"
)

// Entry is one schedule. The exported fields are its definition; Compile
// checks them and prepares the entry for firing.
type Entry struct {
	Name     string          `json:"name"`
	Spec     string          `json:"spec"`
	TaskType string          `json:"task_type"`
	Payload  json.RawMessage `json:"payload,omitempty"`
	Queue    string          `json:"queue,omitempty"`
	Timezone string          `json:"timezone,omitempty"` // IANA name; empty means UTC
	Source   string          `json:"source"`             // SourceFile or SourceDatabase
	// Task options; zero values mean the task type's defaults.
	MaxRetry *int          `json:"max_retry,omitempty"`
	Timeout  time.Duration `json:"timeout,omitempty"`
	// CatchupWindow overrides the engine's catch-up window when not nil.
	CatchupWindow *time.Duration `json:"catchup_window,omitempty"`
	// ExpiresIn: a fire not started this long after its tick is archived
	// unrun (zero: the task type's default).
	ExpiresIn time.Duration `json:"expires_in,omitempty"`
	// Enabled is false for a database entry that is kept but not fired.
	Enabled bool `json:"enabled"`

	// Since is when the current definition took effect (a database row's
	// updated_at): no tick before it is fired or caught up.
	Since time.Time `json:"-"`
	// LastFired is the last fired tick as the database knows it (zero if
	// none); the engine's Redis record takes precedence.
	LastFired time.Time `json:"-"`

	sched    cron.Schedule
	loc      *time.Location
	taskOpts tasks.Payload
}

// everySchedule is @every d aligned to the Unix epoch: its ticks are the
// multiples of d, whatever time the scheduler started, so every replica
// computes the same ticks (robfig/cron counts @every from the start).
type everySchedule struct{ d time.Duration }

func (s everySchedule) Next(t time.Time) time.Time {
	d := int64(s.d / time.Second)
	u := t.Unix()
	n := u - u%d + d
	if u < 0 && u%d != 0 {
		n -= d
	}
	return time.Unix(n, 0).In(t.Location())
}

// parser accepts 5 fields, an optional leading seconds field, and
// descriptors such as @daily and @every 30s.
var parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.\-]{0,99}$`)

// Compile validates e against the registry and prepares it for firing. The
// error is a tasks.FieldErrors naming each bad field.
func (e *Entry) Compile(reg *tasks.Registry) error {
	bad := tasks.FieldErrors{}
	if !validName.MatchString(e.Name) {
		bad["name"] = "must be 1-100 characters: lower-case letters, digits, _ . - (starting with a letter or digit)"
	}
	if e.Timezone == "" {
		e.Timezone = "UTC"
	}
	loc, err := time.LoadLocation(e.Timezone)
	if err != nil {
		bad["timezone"] = fmt.Sprintf("unknown time zone %q", e.Timezone)
	}
	e.loc = loc
	if strings.HasPrefix(strings.TrimSpace(e.Spec), "CRON_TZ=") || strings.HasPrefix(strings.TrimSpace(e.Spec), "TZ=") {
		bad["spec"] = "set the time zone in the timezone field, not in the spec"
	} else if s, err := parser.Parse(e.Spec); err != nil {
		bad["spec"] = fmt.Sprintf("invalid cron spec %q: %v", e.Spec, err)
	} else if every, ok := s.(cron.ConstantDelaySchedule); ok {
		// robfig/cron turns "@every 0s" and "@every -1s" into every second;
		// a non-positive or sub-second interval is a mistake, not a request
		// for the fastest schedule there is.
		if d, err := time.ParseDuration(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(e.Spec), "@every"))); err != nil || d < time.Second {
			bad["spec"] = fmt.Sprintf("the interval of %q must be at least 1s", e.Spec)
		}
		e.sched = everySchedule{d: max(every.Delay.Truncate(time.Second), time.Second)}
	} else {
		e.sched = s
	}
	if e.MaxRetry != nil && (*e.MaxRetry < 0 || *e.MaxRetry > 100) {
		bad["max_retry"] = "must be between 0 and 100"
	}
	if e.Timeout != 0 && (e.Timeout < time.Second || e.Timeout > 24*time.Hour) {
		bad["timeout"] = "must be between 1 second and 24 hours"
	}
	if e.ExpiresIn != 0 && (e.ExpiresIn < time.Second || e.ExpiresIn > 365*24*time.Hour) {
		bad["expires_in"] = "must be between 1 second and 365 days"
	}
	if e.CatchupWindow != nil && (*e.CatchupWindow < 0 || *e.CatchupWindow > 7*24*time.Hour) {
		bad["catchup_window"] = "must be between 0 and 7 days"
	}
	if e.TaskType == "" {
		bad["task_type"] = "is required"
	} else if p, err := reg.Decode(e.TaskType, e.Payload); errors.Is(err, tasks.ErrUnknownType) {
		bad["task_type"] = fmt.Sprintf("unknown task type %q", e.TaskType)
	} else if err != nil {
		var fe tasks.FieldErrors
		if errors.As(err, &fe) {
			for k, v := range fe {
				if k != "payload" {
					k = "payload." + k
				}
				bad[k] = v
			}
		} else {
			bad["payload"] = err.Error()
		}
	} else {
		e.taskOpts = p
	}
	if len(bad) > 0 {
		return bad
	}
	return nil
}

// Next returns the first tick strictly after t (zero if there is none).
//
// When clocks fall back, robfig/cron matches the repeated wall-clock time
// twice. As in cron(8), a fixed-time schedule (no wildcard in the hour or
// minute field, e.g. a daily 01:30) fires only at the first pass; schedules
// with a wildcard keep firing by elapsed time.
func (e *Entry) Next(t time.Time) time.Time {
	n := e.sched.Next(t.In(e.loc))
	if s, ok := e.sched.(*cron.SpecSchedule); ok && !n.IsZero() && s.Hour&starBit == 0 && s.Minute&starBit == 0 {
		_, offBefore := n.Add(-3 * time.Hour).Zone()
		_, off := n.Zone()
		if offBefore > off && sameWallClock(n.Add(-time.Duration(offBefore-off)*time.Second), n) {
			return e.sched.Next(n) // the second pass of a time already fired
		}
	}
	return n
}

// starBit is robfig/cron's mark of a field written as "*".
const starBit = 1 << 63

func sameWallClock(a, b time.Time) bool {
	ay, am, ad := a.Date()
	by, bm, bd := b.Date()
	return ay == by && am == bm && ad == bd && a.Hour() == b.Hour() && a.Minute() == b.Minute() && a.Second() == b.Second()
}

// Location is the entry's time zone (after Compile).
func (e *Entry) Location() *time.Location { return e.loc }

// options are the asynq options the entry adds to its type's defaults.
func (e *Entry) options() []asynq.Option {
	var opts []asynq.Option
	if e.Queue != "" {
		opts = append(opts, asynq.Queue(e.Queue))
	}
	if e.MaxRetry != nil {
		opts = append(opts, asynq.MaxRetry(*e.MaxRetry))
	}
	if e.Timeout > 0 {
		opts = append(opts, asynq.Timeout(e.Timeout))
	}
	return opts
}

// headers are the task headers of a fire for tick: the schedule's name and,
// with ExpiresIn, the deadline counted from the tick (so a tick caught up
// late does not get a fresh deadline).
func (e *Entry) headers(tick time.Time) map[string]string {
	h := map[string]string{"schedule": e.Name}
	if e.ExpiresIn > 0 {
		h = tasks.WithExpiry(h, tick.Add(e.ExpiresIn))
	}
	return h
}

// window is the entry's catch-up window given the engine's default.
func (e *Entry) window(def time.Duration) time.Duration {
	if e.CatchupWindow != nil {
		return *e.CatchupWindow
	}
	return def
}

// fingerprint identifies the definition: entries with equal fingerprints
// fire the same tasks at the same ticks.
func (e *Entry) fingerprint() string {
	b, _ := json.Marshal(e)
	return string(b)
}

// Period estimates the interval between ticks around t (cron specs can be
// irregular; the next gap is a good enough bound for retention).
func (e *Entry) Period(t time.Time) time.Duration {
	a := e.Next(t)
	return e.Next(a).Sub(a)
}

// TaskID is the task ID of the fire of tick: the same for every replica.
func (e *Entry) TaskID(tick time.Time) string {
	return fmt.Sprintf("schedule:%s:%d", e.Name, tick.Unix())
}

// Retention is how long a fired task is kept after it completes, so a late
// second attempt at the same tick still collides with it: twice the period,
// at least minRetention (which the engine keeps above its catch-up window),
// at most a week.
func (e *Entry) Retention(tick time.Time, minRetention time.Duration) time.Duration {
	r := 2 * e.Period(tick)
	r = max(r, minRetention)
	return min(r, 7*24*time.Hour)
}

// file is the YAML layout of SCHEDULES_FILE.
type file struct {
	Schedules []struct {
		Name     string         `yaml:"name"`
		Spec     string         `yaml:"spec"`
		Task     string         `yaml:"task"`
		Payload  map[string]any `yaml:"payload"`
		Queue    string         `yaml:"queue"`
		Timezone string         `yaml:"timezone"`
		MaxRetry *int           `yaml:"max_retry"`
		Timeout  time.Duration  `yaml:"timeout"`
		// CatchupWindow overrides SCHEDULER_CATCHUP_WINDOW (e.g. 1h, 0s).
		CatchupWindow *time.Duration `yaml:"catchup_window"`
		// ExpiresIn: a fire not started this long after its tick never runs.
		ExpiresIn time.Duration `yaml:"expires_in"`
	} `yaml:"schedules"`
}

// LoadFile reads and validates a schedules file. Any problem fails the whole
// file with an error naming the entry and field: the scheduler refuses to
// start on a file it only half understands.
func LoadFile(path string, reg *tasks.Registry) ([]*Entry, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("SCHEDULES_FILE: %w", err)
	}
	var f file
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) { // an empty file has no schedules
		return nil, fmt.Errorf("SCHEDULES_FILE %s: %w", path, err)
	}
	seen := map[string]bool{}
	entries := make([]*Entry, 0, len(f.Schedules))
	for i, s := range f.Schedules {
		payload, err := json.Marshal(s.Payload)
		if err != nil {
			return nil, fmt.Errorf("SCHEDULES_FILE %s: entry %d (%q): payload: %w", path, i+1, s.Name, err)
		}
		if s.Payload == nil {
			payload = nil
		}
		e := &Entry{Name: s.Name, Spec: s.Spec, TaskType: s.Task, Payload: payload,
			Queue: s.Queue, Timezone: s.Timezone, Source: SourceFile, Enabled: true,
			MaxRetry: s.MaxRetry, Timeout: s.Timeout, CatchupWindow: s.CatchupWindow, ExpiresIn: s.ExpiresIn}
		if err := e.Compile(reg); err != nil {
			return nil, fmt.Errorf("SCHEDULES_FILE %s: entry %d (%q): %w", path, i+1, s.Name, err)
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("SCHEDULES_FILE %s: entry %d: name %q is used twice", path, i+1, e.Name)
		}
		seen[e.Name] = true
		entries = append(entries, e)
	}
	return entries, nil
}

// FromRow builds and compiles the entry of a schedules row. The error names
// the bad fields (tasks.FieldErrors): a row written by hand may be anything.
func FromRow(r store.Schedule, reg *tasks.Registry) (*Entry, error) {
	e := &Entry{Name: r.Name, Spec: r.Spec, TaskType: r.TaskType, Payload: r.Payload, Queue: r.Queue,
		Timezone: r.Timezone, Source: SourceDatabase, MaxRetry: r.MaxRetry, Enabled: r.Enabled, Since: r.UpdatedAt}
	if r.TimeoutSeconds != nil {
		e.Timeout = time.Duration(*r.TimeoutSeconds) * time.Second
		if e.Timeout == 0 {
			e.Timeout = -1 // an explicit 0 is invalid, not "the default"
		}
	}
	if r.CatchupWindowSeconds != nil {
		w := time.Duration(*r.CatchupWindowSeconds) * time.Second
		e.CatchupWindow = &w
	}
	if r.ExpiresInSeconds != nil {
		e.ExpiresIn = time.Duration(*r.ExpiresInSeconds) * time.Second
		if e.ExpiresIn == 0 {
			e.ExpiresIn = -1 // an explicit 0 is invalid, not "the default"
		}
	}
	if r.LastFiredAt != nil {
		e.LastFired = *r.LastFiredAt
	}
	return e, e.Compile(reg)
}
