package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

// ErrReadOnly is returned for changes to a file schedule: edit the file and
// send the schedulers SIGHUP instead.
var ErrReadOnly = errors.New("schedule comes from SCHEDULES_FILE and is read-only")

// Catalog is the API's side of schedules: it validates and stores database
// schedules, lists them with the file's (as the schedulers published them)
// and their runtime state from Redis, and fires a schedule on demand.
type Catalog struct {
	rows   *store.Schedules
	state  *State
	rdb    redis.UniversalClient
	q      Enqueuer
	reg    *tasks.Registry
	queues map[string]int
	now    func() time.Time
}

// NewCatalog returns a catalog over the schedules table of d and the
// scheduler state in rdb. queues are the queues the workers serve
// (WORKER_QUEUES): a schedule may name no other.
func NewCatalog(d *sqlx.DB, rdb redis.UniversalClient, q Enqueuer, reg *tasks.Registry, queues map[string]int) *Catalog {
	return &Catalog{rows: store.NewSchedules(d), state: NewState(rdb), rdb: rdb, q: q, reg: reg, queues: queues, now: time.Now}
}

// Input is a database schedule as the API receives it. Durations are whole
// seconds; nil options mean the task type's defaults (and, for the catch-up
// window, SCHEDULER_CATCHUP_WINDOW).
type Input struct {
	Name          string
	Spec          string
	Timezone      string
	TaskType      string
	Payload       json.RawMessage
	Queue         string
	MaxRetry      *int
	Timeout       *int
	CatchupWindow *int
	Enabled       bool
	ExpiresIn     *int // seconds
}

// View is a schedule as the API shows it.
type View struct {
	Name          string          `json:"name"`
	Source        string          `json:"source"` // "file" (read-only) or "database"
	Spec          string          `json:"spec"`
	Timezone      string          `json:"timezone"`
	TaskType      string          `json:"task_type"`
	Payload       json.RawMessage `json:"payload"`
	Queue         string          `json:"queue,omitempty"`
	MaxRetry      *int            `json:"max_retry,omitempty"`
	Timeout       *int            `json:"timeout,omitempty"`        // seconds
	CatchupWindow *int            `json:"catchup_window,omitempty"` // seconds
	ExpiresIn     *int            `json:"expires_in,omitempty"`     // seconds
	Enabled       bool            `json:"enabled"`
	NextFireAt    *time.Time      `json:"next_fire_at"` // nil when disabled or invalid
	LastFiredAt   *time.Time      `json:"last_fired_at"`
	LastTaskID    string          `json:"last_task_id,omitempty"`
	CreatedAt     *time.Time      `json:"created_at,omitempty"`
	UpdatedAt     *time.Time      `json:"updated_at,omitempty"`
	// Error says why the schedulers skip this row (written around the API).
	Error string `json:"error,omitempty"`
}

// Status is the schedulers' side of GET /schedules.
type Status struct {
	LeaderInfo
}

func (in Input) row() store.Schedule {
	return store.Schedule{Name: in.Name, Spec: in.Spec, Timezone: in.Timezone, TaskType: in.TaskType,
		Payload: in.Payload, Queue: in.Queue, MaxRetry: in.MaxRetry, TimeoutSeconds: in.Timeout,
		CatchupWindowSeconds: in.CatchupWindow, Enabled: in.Enabled, ExpiresInSeconds: in.ExpiresIn}
}

func inputOf(r store.Schedule) Input {
	return Input{Name: r.Name, Spec: r.Spec, Timezone: r.Timezone, TaskType: r.TaskType, Payload: r.Payload,
		Queue: r.Queue, MaxRetry: r.MaxRetry, Timeout: r.TimeoutSeconds, CatchupWindow: r.CatchupWindowSeconds,
		Enabled: r.Enabled, ExpiresIn: r.ExpiresInSeconds}
}

// validate checks in as the scheduler will, plus the queue; the error is
// tasks.FieldErrors.
func (c *Catalog) validate(in *Input) error {
	if in.Timezone == "" {
		in.Timezone = "UTC"
	}
	// Bound the numbers before they become durations (a huge number of
	// seconds overflows) or INTEGER columns (above 2³¹−1 the insert fails).
	bad := tasks.FieldErrors{}
	checked := *in
	for _, n := range []struct {
		field   string
		v       **int
		lo, hi  int
		message string
	}{
		{"max_retry", &checked.MaxRetry, 0, 100, "must be between 0 and 100"},
		{"timeout", &checked.Timeout, 1, 86400, "must be between 1 and 86400 seconds"},
		{"catchup_window", &checked.CatchupWindow, 0, 7 * 24 * 3600, "must be between 0 and 604800 seconds (7 days)"},
	} {
		if *n.v != nil && (**n.v < n.lo || **n.v > n.hi) {
			bad[n.field] = n.message
			*n.v = nil
		}
	}
	_, err := FromRow(checked.row(), c.reg)
	var fe tasks.FieldErrors
	if errors.As(err, &fe) {
		for k, v := range fe {
			bad[k] = v
		}
	} else if err != nil {
		return err
	}
	if in.Queue != "" {
		if _, ok := c.queues[in.Queue]; !ok {
			bad["queue"] = fmt.Sprintf("queue %q is not served by the workers (WORKER_QUEUES)", in.Queue)
		}
	}
	if len(bad) > 0 {
		return bad
	}
	return nil
}

// fileEntry returns the published file entry named name, or nil.
func (c *Catalog) fileEntry(ctx context.Context, name string) (*Entry, error) {
	file, err := c.state.FileEntries(ctx)
	if err != nil {
		return nil, err
	}
	for _, e := range file {
		if e.Name == name {
			return e, nil
		}
	}
	return nil, nil
}

// Create validates and stores a database schedule. Errors: tasks.FieldErrors
// (including a name already in use, by either source), or a database error.
func (c *Catalog) Create(ctx context.Context, in Input) (View, error) {
	if err := c.validate(&in); err != nil {
		return View{}, err
	}
	if f, err := c.fileEntry(ctx, in.Name); err != nil {
		return View{}, err
	} else if f != nil {
		return View{}, tasks.FieldErrors{"name": fmt.Sprintf("%q is a schedule of SCHEDULES_FILE", in.Name)}
	}
	r := in.row()
	if err := c.rows.Create(ctx, &r); errors.Is(err, store.ErrConflict) {
		return View{}, tasks.FieldErrors{"name": fmt.Sprintf("a schedule named %q already exists", in.Name)}
	} else if err != nil {
		return View{}, err
	}
	return c.rowView(r, nil), nil
}

// Update applies change to the database schedule named name, validates the
// result and stores it. Errors: store.ErrNotFound, ErrReadOnly,
// tasks.FieldErrors.
func (c *Catalog) Update(ctx context.Context, name string, change func(*Input)) (View, error) {
	if f, err := c.fileEntry(ctx, name); err != nil {
		return View{}, err
	} else if f != nil {
		return View{}, fmt.Errorf("update %q: %w", name, ErrReadOnly)
	}
	r, err := c.rows.Get(ctx, name)
	if err != nil {
		return View{}, err
	}
	in := inputOf(r)
	change(&in)
	in.Name = name
	if err := c.validate(&in); err != nil {
		return View{}, err
	}
	r = in.row()
	if err := c.rows.Update(ctx, &r); err != nil {
		return View{}, err
	}
	last, _ := c.state.LastFired(ctx, name)
	return c.rowView(r, timeOrNil(last)), nil
}

// Delete removes the database schedule named name. Errors:
// store.ErrNotFound, ErrReadOnly.
func (c *Catalog) Delete(ctx context.Context, name string) error {
	if f, err := c.fileEntry(ctx, name); err != nil {
		return err
	} else if f != nil {
		return fmt.Errorf("delete %q: %w", name, ErrReadOnly)
	}
	if err := c.rows.Delete(ctx, name); err != nil {
		return err
	}
	return c.state.Forget(ctx, name)
}

// Get returns the schedule named name from either source.
func (c *Catalog) Get(ctx context.Context, name string) (View, error) {
	views, _, err := c.List(ctx)
	if err != nil {
		return View{}, err
	}
	for _, v := range views {
		if v.Name == name {
			return v, nil
		}
	}
	return View{}, fmt.Errorf("schedule %q: %w", name, store.ErrNotFound)
}

// List returns every schedule of both sources sorted by name, and who leads.
func (c *Catalog) List(ctx context.Context) ([]View, Status, error) {
	rows, err := c.rows.List(ctx)
	if err != nil {
		return nil, Status{}, err
	}
	file, err := c.state.FileEntries(ctx)
	if err != nil {
		return nil, Status{}, err
	}
	last, err := c.state.AllLastFired(ctx)
	if err != nil {
		return nil, Status{}, err
	}
	leader, err := CurrentLeader(ctx, c.rdb)
	if err != nil {
		return nil, Status{}, err
	}
	inFile := map[string]bool{}
	views := make([]View, 0, len(rows)+len(file))
	for _, e := range file {
		inFile[e.Name] = true
		v := View{Name: e.Name, Source: SourceFile, Spec: e.Spec, Timezone: e.Timezone, TaskType: e.TaskType,
			Payload: e.Payload, Queue: e.Queue, MaxRetry: e.MaxRetry, Enabled: true}
		if e.Timeout > 0 {
			v.Timeout = seconds(e.Timeout)
		}
		if e.CatchupWindow != nil {
			v.CatchupWindow = seconds(*e.CatchupWindow)
		}
		if e.ExpiresIn > 0 {
			v.ExpiresIn = seconds(e.ExpiresIn)
		}
		if err := e.Compile(c.reg); err != nil {
			v.Error = err.Error()
		} else {
			v.NextFireAt = timeOrNil(e.Next(c.now()))
		}
		if t, ok := last[e.Name]; ok {
			v.LastFiredAt, v.LastTaskID = timeOrNil(t), e.TaskID(t)
		}
		views = append(views, v)
	}
	for _, r := range rows {
		var l *time.Time
		if t, ok := last[r.Name]; ok {
			l = timeOrNil(t)
		}
		v := c.rowView(r, l)
		if inFile[r.Name] {
			v.Error = "skipped by the schedulers: SCHEDULES_FILE has a schedule of this name"
			v.NextFireAt = nil
		}
		views = append(views, v)
	}
	sort.SliceStable(views, func(i, j int) bool { return views[i].Name < views[j].Name })
	return views, Status{LeaderInfo: leader}, nil
}

// rowView shows a row; last is the last fired tick from Redis, if known.
func (c *Catalog) rowView(r store.Schedule, last *time.Time) View {
	v := View{Name: r.Name, Source: SourceDatabase, Spec: r.Spec, Timezone: r.Timezone, TaskType: r.TaskType,
		Payload: json.RawMessage(r.Payload), Queue: r.Queue, MaxRetry: r.MaxRetry, Timeout: r.TimeoutSeconds,
		CatchupWindow: r.CatchupWindowSeconds, ExpiresIn: r.ExpiresInSeconds, Enabled: r.Enabled, LastTaskID: r.LastTaskID,
		CreatedAt: timeOrNil(r.CreatedAt), UpdatedAt: timeOrNil(r.UpdatedAt)}
	if r.LastFiredAt != nil {
		v.LastFiredAt = timeOrNil(*r.LastFiredAt)
	}
	if last != nil && (v.LastFiredAt == nil || last.After(*v.LastFiredAt)) {
		v.LastFiredAt = last
		v.LastTaskID = fmt.Sprintf("schedule:%s:%d", r.Name, last.Unix())
	}
	e, err := FromRow(r, c.reg)
	switch {
	case err != nil:
		v.Error = "skipped by the schedulers: " + err.Error()
	case r.Enabled:
		v.NextFireAt = timeOrNil(e.Next(maxTime(c.now(), r.UpdatedAt)))
	}
	return v
}

// Fire enqueues the task of the schedule named name now, outside its ticks,
// under the task ID schedule:<name>:manual:<unix seconds>: repeating the
// call within the same second is a queue.ErrConflict, not a second task.
// A disabled schedule can be fired.
func (c *Catalog) Fire(ctx context.Context, name, requestID string) (queue.TaskInfo, error) {
	e, err := c.fileEntry(ctx, name)
	if err != nil {
		return queue.TaskInfo{}, err
	}
	if e == nil {
		r, err := c.rows.Get(ctx, name)
		if err != nil {
			return queue.TaskInfo{}, err
		}
		if e, err = FromRow(r, c.reg); err != nil {
			return queue.TaskInfo{}, err
		}
	} else if err := e.Compile(c.reg); err != nil {
		return queue.TaskInfo{}, err
	}
	headers := e.headers(c.now()) // a manual fire's deadline counts from now
	if requestID != "" {
		headers[tasks.HeaderRequestID] = requestID
	}
	id := fmt.Sprintf("schedule:%s:manual:%d", name, c.now().Unix())
	t, err := tasks.NewWithHeaders(e.taskOpts, headers, append(e.options(), asynq.TaskID(id))...)
	if err != nil {
		return queue.TaskInfo{}, err
	}
	return c.q.EnqueueTask(ctx, t)
}

func seconds(d time.Duration) *int {
	n := int(d / time.Second)
	return &n
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
