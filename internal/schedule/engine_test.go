package schedule

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// countingObserver records outcomes per schedule.
type countingObserver struct {
	mu      sync.Mutex
	fired   map[string]int // "name/outcome" → count
	skipped map[string]int
	failed  map[string]int // "name/reason"
}

func newCounting() *countingObserver {
	return &countingObserver{fired: map[string]int{}, skipped: map[string]int{}, failed: map[string]int{}}
}

func (o *countingObserver) Fired(name, outcome string) {
	o.mu.Lock()
	o.fired[name+"/"+outcome]++
	o.mu.Unlock()
}

func (o *countingObserver) Skipped(name string, n int) {
	o.mu.Lock()
	o.skipped[name] += n
	o.mu.Unlock()
}

func (o *countingObserver) Failed(name, reason string) {
	o.mu.Lock()
	o.failed[name+"/"+reason]++
	o.mu.Unlock()
}

func (o *countingObserver) get(m map[string]int, k string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return m[k]
}

type engineBundle struct {
	engine *Engine
	state  *State
	rdb    *redis.Client
	obs    *countingObserver
	cancel context.CancelFunc
	done   chan struct{}
}

// setupEngine builds an engine on a Redis DB of its own (not started).
func setupEngine(t *testing.T, window time.Duration) *engineBundle {
	t.Helper()
	redisURL, rdb := testenv.Redis(t)
	q, err := queue.NewClient(redisURL, tasks.All(), map[string]int{"default": 1, "low": 1, "critical": 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	b := &engineBundle{state: NewState(rdb), rdb: rdb, obs: newCounting()}
	b.engine = NewEngine(q, testenv.Logger(t), EngineOptions{State: b.state, Observer: b.obs, CatchupWindow: window})
	return b
}

func (b *engineBundle) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel, b.done = cancel, make(chan struct{})
	go func() { defer close(b.done); _ = b.engine.Run(ctx) }()
	t.Cleanup(b.stop)
}

func (b *engineBundle) stop() {
	if b.cancel != nil {
		b.cancel()
		<-b.done
		b.cancel = nil
	}
}

func (b *engineBundle) hasTask(t *testing.T, name string, tick int64) bool {
	t.Helper()
	n, err := b.rdb.Exists(context.Background(), fmt.Sprintf("asynq:{default}:t:schedule:%s:%d", name, tick)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// After a restart the engine fires the ticks missed since the last fired
// tick on record, inside the catch-up window only, each once.
func TestEngineCatchesUpInsideTheWindowOnly(t *testing.T) {
	t.Parallel()
	b := setupEngine(t, 20*time.Second)
	e := compiled(t, Entry{Name: "beat", Spec: "@every 1s", TaskType: tasks.TypeSystemPing, Source: SourceFile})
	now := time.Now().Unix()
	last := now - 60 // the previous leader's last fire, a minute ago
	if err := b.state.RecordFired(context.Background(), "beat", time.Unix(last, 0)); err != nil {
		t.Fatal(err)
	}
	b.engine.SetEntries([]*Entry{e})
	b.start(t)

	testenv.Eventually(t, 10*time.Second, func() bool { return b.hasTask(t, "beat", now-5) && b.hasTask(t, "beat", now+1) },
		"missed ticks were not caught up")
	b.stop()
	for tick := now - 15; tick <= now+1; tick++ {
		if !b.hasTask(t, "beat", tick) {
			t.Errorf("tick %d (inside the window) not fired", tick)
		}
	}
	for tick := last + 1; tick < now-25; tick++ {
		if b.hasTask(t, "beat", tick) {
			t.Errorf("tick %d (outside the window) fired", tick)
		}
	}
	if got := b.obs.get(b.obs.skipped, "beat"); got < 30 {
		t.Errorf("skipped = %d, want the ~40 ticks older than the window", got)
	}
	if got := b.obs.get(b.obs.fired, "beat/duplicate"); got != 0 {
		t.Errorf("duplicates = %d", got)
	}
	rec, err := b.state.LastFired(context.Background(), "beat")
	if err != nil || rec.Unix() < now+1 {
		t.Errorf("last fired on record = %v, %v", rec, err)
	}
}

// A reload that hands the same definitions over and over neither loses nor
// repeats a tick; a changed definition fires nothing from before the change.
func TestEngineReloadKeepsUnchangedEntries(t *testing.T) {
	t.Parallel()
	b := setupEngine(t, time.Minute)
	fresh := func(spec string) []*Entry {
		return []*Entry{compiled(t, Entry{Name: "beat", Spec: spec, TaskType: tasks.TypeSystemPing, Source: SourceFile})}
	}
	b.engine.SetEntries(fresh("@every 1s"))
	b.start(t)
	start := time.Now().Unix()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		b.engine.SetEntries(fresh("@every 1s")) // a SIGHUP storm with an unchanged file
		time.Sleep(50 * time.Millisecond)
	}
	end := time.Now().Unix()
	b.stop()
	for tick := start + 1; tick < end; tick++ {
		if !b.hasTask(t, "beat", tick) {
			t.Errorf("tick %d lost across reloads", tick)
		}
	}
	if got := b.obs.get(b.obs.fired, "beat/duplicate"); got != 0 {
		t.Errorf("duplicates = %d", got)
	}
}

// The syncer skips and logs a corrupt row, once, and the other schedules
// keep firing; a disabled row is not fired; a row whose name the file uses
// is skipped.
func TestSyncerSkipsCorruptRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testenv.Tx(t)
	for _, row := range []string{
		`('good', '@every 1s', 'UTC', 'system:ping', NULL, true)`,
		`('bad-spec', 'every tuesday', 'UTC', 'system:ping', NULL, true)`,
		`('bad-zone', '@daily', 'Mars/Olympus', 'system:ping', NULL, true)`,
		`('bad-type', '@daily', 'UTC', 'no:such', NULL, true)`,
		`('bad-payload', '@daily', 'UTC', 'system:ping', '{"sleep_ms": "soon"}', true)`,
		`('off', '@daily', 'UTC', 'system:ping', NULL, false)`,
		`('from-file', '@daily', 'UTC', 'system:ping', NULL, true)`,
	} {
		if _, err := tx.ExecContext(ctx, `INSERT INTO schedules (name, spec, timezone, task_type, payload, enabled) VALUES `+row); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	b := setupEngine(t, time.Minute)
	obs := newCounting()
	s := NewSyncer(store.NewSchedules(tx).List, tasks.All(), b.engine, log, obs)
	file := []*Entry{compiled(t, Entry{Name: "from-file", Spec: "@hourly", TaskType: tasks.TypeSystemPing, Source: SourceFile})}
	// At start a name in both sources is refused.
	if err := s.Start(ctx, file); err == nil || !strings.Contains(err.Error(), "from-file") {
		t.Fatalf("Start with a clashing name: err = %v", err)
	}
	file[0].Name = "file-only"
	if err := s.Start(ctx, file); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil { // a second sync logs nothing new
		t.Fatal(err)
	}
	var names []string
	for _, e := range b.engine.Entries() {
		names = append(names, e.Name)
	}
	if got := strings.Join(names, ","); got != "file-only,from-file,good" {
		// from-file is a database row here (the file was renamed), so it runs.
		t.Fatalf("entries = %s", got)
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	for _, name := range []string{"bad-spec", "bad-zone", "bad-type", "bad-payload"} {
		if n := strings.Count(out, "schedule="+name+" "); n != 1 {
			t.Errorf("%s logged %d times, want once:\n%s", name, n, out)
		}
		if obs.get(obs.failed, name+"/"+ErrorInvalid) != 1 {
			t.Errorf("%s not counted as invalid", name)
		}
	}
	for _, want := range []string{"invalid cron spec", "unknown time zone", "unknown task type", "payload"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}

	// The good row fires while the bad ones sit there.
	b.start(t)
	now := time.Now().Unix()
	testenv.Eventually(t, 10*time.Second, func() bool { return b.hasTask(t, "good", now+2) }, "good schedule does not fire")
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Without notifications the syncer still picks a new row up within its
// interval.
func TestSyncerPollsWithoutNotifications(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, _ := testenv.DB(t)
	b := setupEngine(t, time.Minute)
	rows := store.NewSchedules(d)
	s := NewSyncer(rows.List, tasks.All(), b.engine, testenv.Logger(t), nil)
	if err := s.Start(ctx, nil); err != nil {
		t.Fatal(err)
	}
	go s.Run(ctx, 200*time.Millisecond, nil)
	r := store.Schedule{Name: "polled", Spec: "@hourly", Timezone: "UTC", TaskType: tasks.TypeSystemPing, Enabled: true}
	if err := rows.Create(ctx, &r); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return len(b.engine.Entries()) == 1 }, "row not synced")
	r.Enabled = false
	if err := rows.Update(ctx, &r); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return len(b.engine.Entries()) == 0 }, "disabled row still scheduled")
}

// A database schedule that has never fired yet starts from its definition
// (updated_at), not from whenever a leader first looks at it: the ticks
// between the two (a failover or restart right after the row was created)
// are caught up, inside the window.
func TestEngineCatchesUpANeverFiredDatabaseEntryFromItsDefinition(t *testing.T) {
	t.Parallel()
	b := setupEngine(t, time.Minute)
	now := time.Now().Unix()
	since := time.Unix(now-10, 0) // created 10 s ago; no leader has fired it
	e := compiled(t, Entry{Name: "fresh", Spec: "@every 1s", TaskType: tasks.TypeSystemPing,
		Source: SourceDatabase, Enabled: true, Since: since})
	b.engine.SetEntries([]*Entry{e})
	b.start(t)
	testenv.Eventually(t, 10*time.Second, func() bool { return b.hasTask(t, "fresh", now+1) }, "schedule does not fire")
	b.stop()
	for tick := now - 9; tick <= now+1; tick++ {
		if !b.hasTask(t, "fresh", tick) {
			t.Errorf("tick %d (after the definition, inside the window) not fired", tick)
		}
	}
	if b.hasTask(t, "fresh", now-10) {
		t.Error("the tick at the definition time itself fired")
	}
}
