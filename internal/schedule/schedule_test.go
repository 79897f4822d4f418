package schedule

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/tasks"
)

func compiled(t *testing.T, e Entry) *Entry {
	t.Helper()
	if err := e.Compile(tasks.All()); err != nil {
		t.Fatalf("compile %+v: %v", e, err)
	}
	return &e
}

// A daily 09:00 schedule in America/New_York fires at 14:00 UTC in winter
// and 13:00 UTC in summer; the day of each change is computed right.
func TestNextAcrossDST(t *testing.T) {
	t.Parallel()
	e := compiled(t, Entry{Name: "ny", Spec: "0 9 * * *", Timezone: "America/New_York", TaskType: tasks.TypeSystemPing})
	cases := []struct {
		now, want string
	}{
		// Spring forward: 2026-03-08 02:00 EST → 03:00 EDT.
		{"2026-03-07T13:00:00Z", "2026-03-07T14:00:00Z"}, // 08:00 EST → 09:00 EST the same day
		{"2026-03-07T15:00:00Z", "2026-03-08T13:00:00Z"}, // next 09:00 is already EDT
		{"2026-03-08T06:59:00Z", "2026-03-08T13:00:00Z"}, // 01:59 EST, a minute before the change
		{"2026-03-08T13:00:00Z", "2026-03-09T13:00:00Z"}, // strictly after
		// Fall back: 2026-11-01 02:00 EDT → 01:00 EST.
		{"2026-10-31T14:00:00Z", "2026-11-01T14:00:00Z"}, // the next 09:00 is EST
		{"2026-11-01T05:30:00Z", "2026-11-01T14:00:00Z"}, // 01:30 EDT, first pass
		{"2026-11-01T06:30:00Z", "2026-11-01T14:00:00Z"}, // 01:30 EST, second pass
	}
	for _, tc := range cases {
		now, _ := time.Parse(time.RFC3339, tc.now)
		want, _ := time.Parse(time.RFC3339, tc.want)
		if got := e.Next(now); !got.Equal(want) {
			t.Errorf("Next(%s) = %s, want %s", tc.now, got.UTC().Format(time.RFC3339), tc.want)
		}
	}
	// The gap between the two fires around the change is 23h, then 25h.
	spring, _ := time.Parse(time.RFC3339, "2026-03-07T14:00:00Z")
	if p := e.Period(spring.Add(-time.Minute)); p != 23*time.Hour {
		t.Errorf("period across spring forward = %s, want 23h", p)
	}
}

// @every ticks are multiples of the period since the epoch, so every
// replica computes the same ticks whenever it started.
func TestEveryIsAlignedToTheEpoch(t *testing.T) {
	t.Parallel()
	e := compiled(t, Entry{Name: "e", Spec: "@every 10s", TaskType: tasks.TypeSystemPing})
	for _, now := range []int64{1_000_000_000, 1_000_000_003, 1_000_000_009} {
		if got := e.Next(time.Unix(now, 0)).Unix(); got != 1_000_000_010 {
			t.Errorf("Next(%d) = %d, want 1000000010", now, got)
		}
	}
	if got := e.Next(time.Unix(1_000_000_010, 0)).Unix(); got != 1_000_000_020 {
		t.Errorf("Next at a tick = %d, want the next one", got)
	}
	if id := e.TaskID(time.Unix(1_000_000_010, 0)); id != "schedule:e:1000000010" {
		t.Errorf("TaskID = %q", id)
	}
}

func TestCompileNamesBadFields(t *testing.T) {
	t.Parallel()
	neg := -1
	cases := []struct {
		name  string
		entry Entry
		field string
	}{
		{"bad name", Entry{Name: "Bad Name", Spec: "@daily", TaskType: tasks.TypeSystemPing}, "name"},
		{"bad spec", Entry{Name: "a", Spec: "61 * * * *", TaskType: tasks.TypeSystemPing}, "spec"},
		{"words", Entry{Name: "a", Spec: "every monday", TaskType: tasks.TypeSystemPing}, "spec"},
		{"tz in spec", Entry{Name: "a", Spec: "CRON_TZ=UTC 0 0 * * *", TaskType: tasks.TypeSystemPing}, "spec"},
		{"unknown zone", Entry{Name: "a", Spec: "@daily", Timezone: "Mars/Olympus", TaskType: tasks.TypeSystemPing}, "timezone"},
		{"unknown type", Entry{Name: "a", Spec: "@daily", TaskType: "no:such"}, "task_type"},
		{"missing type", Entry{Name: "a", Spec: "@daily"}, "task_type"},
		{"invalid payload", Entry{Name: "a", Spec: "@daily", TaskType: tasks.TypeSystemPing, Payload: json.RawMessage(`{"sleep_ms":-5}`)}, "payload.sleep_ms"},
		{"unknown payload field", Entry{Name: "a", Spec: "@daily", TaskType: tasks.TypeSystemPing, Payload: json.RawMessage(`{"nope":1}`)}, "payload.nope"},
		{"bad max_retry", Entry{Name: "a", Spec: "@daily", TaskType: tasks.TypeSystemPing, MaxRetry: &neg}, "max_retry"},
		{"bad timeout", Entry{Name: "a", Spec: "@daily", TaskType: tasks.TypeSystemPing, Timeout: time.Millisecond}, "timeout"},
		{"bad expires_in", Entry{Name: "a", Spec: "@daily", TaskType: tasks.TypeSystemPing, ExpiresIn: -time.Second}, "expires_in"},
		{"expires_in over a year", Entry{Name: "a", Spec: "@daily", TaskType: tasks.TypeSystemPing, ExpiresIn: 400 * 24 * time.Hour}, "expires_in"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.entry.Compile(tasks.All())
			var fe tasks.FieldErrors
			if !errors.As(err, &fe) || fe[tc.field] == "" {
				t.Fatalf("err = %v, want a message for %q", err, tc.field)
			}
		})
	}
	for _, spec := range []string{"*/5 * * * *", "30 */5 * * * *", "@every 30s", "@daily", "@hourly", "0 0 1 1 *"} {
		e := Entry{Name: "ok", Spec: spec, TaskType: tasks.TypeSystemPing}
		if err := e.Compile(tasks.All()); err != nil {
			t.Errorf("spec %q: %v", spec, err)
		}
	}
}

func TestLoadFileRejectsDuplicatesAndBadEntries(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+time.Now().Format("150405.000000000")+".yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	_, err := LoadFile(write("schedules:\n  - {name: a, spec: '@daily', task: system:ping}\n  - {name: a, spec: '@hourly', task: system:ping}\n"), tasks.All())
	if err == nil || !strings.Contains(err.Error(), "used twice") {
		t.Errorf("duplicate: err = %v", err)
	}
	_, err = LoadFile(write("schedules:\n  - {name: a, spec: 'nope', task: system:ping}\n"), tasks.All())
	if err == nil || !strings.Contains(err.Error(), "spec") {
		t.Errorf("bad spec: err = %v", err)
	}
	es, err := LoadFile(write("schedules:\n  - {name: a, spec: '@every 5s', task: system:ping, catchup_window: 1m, timeout: 10s, max_retry: 0}\n"), tasks.All())
	if err != nil || len(es) != 1 || *es[0].CatchupWindow != time.Minute || es[0].Timeout != 10*time.Second || *es[0].MaxRetry != 0 {
		t.Errorf("options: %+v, %v", es, err)
	}
}

// When clocks fall back, a fixed-time schedule fires once at the repeated
// wall-clock time, not twice (as cron does); a schedule with a wildcard hour
// or minute keeps firing by the elapsed time, both passes included.
func TestNextFiresARepeatedWallClockTimeOnce(t *testing.T) {
	t.Parallel()
	// 2026-11-01 02:00 EDT → 01:00 EST in America/New_York.
	from, _ := time.Parse(time.RFC3339, "2026-11-01T04:00:00Z") // 00:00 EDT
	cases := []struct {
		spec string
		want []string
	}{
		{"30 1 * * *", []string{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"}},
		{"0 30 1 * * *", []string{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"}},
		{"0 * * * *", []string{"2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z"}},
		{"30 * * * *", []string{"2026-11-01T04:30:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"}},
	}
	for _, tc := range cases {
		e := compiled(t, Entry{Name: "ny", Spec: tc.spec, Timezone: "America/New_York", TaskType: tasks.TypeSystemPing})
		tick := from
		for i, w := range tc.want {
			tick = e.Next(tick)
			if got := tick.UTC().Format(time.RFC3339); got != w {
				t.Errorf("%q: tick %d = %s, want %s", tc.spec, i+1, got, w)
				break
			}
		}
	}
}

// A fire's deadline counts from its tick, so a tick caught up late is not
// given a fresh one.
func TestFireExpiresCountFromTheTick(t *testing.T) {
	t.Parallel()
	tick := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	e := Entry{Name: "digest", ExpiresIn: 10 * time.Minute}
	at, ok := tasks.ExpiryOf(e.headers(tick))
	if !ok || !at.Equal(tick.Add(10*time.Minute)) {
		t.Fatalf("expires_at %v (%v), want %v", at, ok, tick.Add(10*time.Minute))
	}
	if _, ok := tasks.ExpiryOf((&Entry{Name: "plain"}).headers(tick)); ok {
		t.Fatal("a schedule without expires_in gave its fire a deadline")
	}
}
