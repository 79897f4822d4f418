// Package schedule is the beat: it turns cron entries into enqueued tasks.
//
// Entries come from sources (the YAML file today; the database is a second
// source). The engine computes each entry's ticks itself with robfig/cron's
// parser rather than running cron.Cron, because every fire must know the
// exact tick it belongs to: the task ID is schedule:<name>:<tick unix
// seconds>, so however many times a tick is attempted (restarts, several
// replicas) asynq accepts it once.
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

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"

	"github.com/conveyor-run/conveyor/tasks"
)

// Entry is one schedule.
type Entry struct {
	Name     string          `json:"name"`
	Spec     string          `json:"spec"`
	TaskType string          `json:"task_type"`
	Payload  json.RawMessage `json:"payload,omitempty"`
	Queue    string          `json:"queue,omitempty"`
	Timezone string          `json:"timezone,omitempty"` // IANA name; empty means UTC
	Source   string          `json:"source"`             // "file" or "database"

	sched    cron.Schedule
	loc      *time.Location
	taskOpts tasks.Payload
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
	} else {
		e.sched = s
	}
	if e.TaskType == "" {
		bad["task_type"] = "is required"
	} else if p, err := reg.Decode(e.TaskType, e.Payload); errors.Is(err, tasks.ErrUnknownType) {
		bad["task_type"] = fmt.Sprintf("unknown task type %q", e.TaskType)
	} else if err != nil {
		var fe tasks.FieldErrors
		if errors.As(err, &fe) {
			for k, v := range fe {
				bad["payload."+k] = v
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

// Next returns the first tick strictly after t.
func (e *Entry) Next(t time.Time) time.Time { return e.sched.Next(t.In(e.loc)) }

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
// at least minRetention, at most a week.
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
			Queue: s.Queue, Timezone: s.Timezone, Source: "file"}
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

