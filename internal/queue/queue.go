// Package queue is the producers' side of asynq: it validates and enqueues
// tasks from the tasks registry, looks tasks up across queues, cancels and
// re-runs them, and reports queue statistics. The API talks to Redis only
// through this package, in plain Go types, so asynq stays out of httpapi.
package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

// Sentinel errors.
var (
	ErrNotFound = errors.New("task not found")
	ErrConflict = errors.New("a task with this ID already exists")
	// ErrNotRunnable: the task is pending or active, so "run now" has no meaning.
	ErrNotRunnable = errors.New("task is not scheduled, retrying or archived")
	// ErrUnavailable: Redis did not take the task (down, or full under
	// maxmemory with noeviction); nothing was enqueued, the caller may retry.
	ErrUnavailable = errors.New("redis did not accept the task")
)

// ParseRedisURL parses REDIS_URL in any form asynq accepts.
func ParseRedisURL(url string) (asynq.RedisConnOpt, error) {
	opt, err := asynq.ParseRedisURI(url)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	return opt, nil
}

// RedisConfig says where Redis is: URL (REDIS_URL) for one server or a
// Sentinel-managed one, or ClusterAddrs (REDIS_CLUSTER_ADDRS) for a Redis
// Cluster, never both. On a cluster every script and multi-key command must
// keep its keys in one hash slot: asynq's keys carry the queue name as a
// hash tag, and Conveyor's own scripts each touch a single key.
type RedisConfig struct {
	URL             string
	ClusterAddrs    []string // seed nodes, host:port
	ClusterPassword string   // REDIS_CLUSTER_PASSWORD; with URL the password is in the URL
}

// ConnOpt returns asynq's connection options for the configured Redis.
func (rc RedisConfig) ConnOpt() (asynq.RedisConnOpt, error) {
	switch {
	case len(rc.ClusterAddrs) > 0 && rc.URL != "":
		return nil, errors.New("REDIS_URL, REDIS_CLUSTER_ADDRS: set only one of them")
	case len(rc.ClusterAddrs) > 0:
		return asynq.RedisClusterClientOpt{Addrs: rc.ClusterAddrs, Password: rc.ClusterPassword}, nil
	default:
		return ParseRedisURL(rc.URL)
	}
}

// Client enqueues and inspects tasks.
type Client struct {
	rdb       redis.UniversalClient
	enq       redis.UniversalClient // asynq's: its commands run in pipelines on rdb
	coalescer *coalescer
	wake      *waker // announces ready tasks to idle workers
	client    *asynq.Client
	insp      *asynq.Inspector
	reg       *tasks.Registry
	queues    map[string]int
	// defaultRetention (TASK_RETENTION) is how long a completed task of a
	// type that declares no Retention is kept (see Retention).
	defaultRetention time.Duration
}

// NewClient connects to the Redis at redisURL (REDIS_URL); see NewClientFor.
func NewClient(redisURL string, reg *tasks.Registry, queues map[string]int) (*Client, error) {
	return NewClientFor(RedisConfig{URL: redisURL}, reg, queues)
}

// NewClientFor connects to Redis as rc says: one server, Sentinel or a
// cluster. queues are the queue names workers serve (WORKER_QUEUES);
// enqueueing to any other queue is refused, since no worker would ever run
// the task.
func NewClientFor(rc RedisConfig, reg *tasks.Registry, queues map[string]int) (*Client, error) {
	opt, err := rc.ConnOpt()
	if err != nil {
		return nil, err
	}
	rdb, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("redis: unsupported connection type %T", opt)
	}
	// asynq's client gets a connection of its own whose commands go out
	// in pipelines over rdb's pool (pipeline.go); it never opens a socket.
	enq := opt.MakeRedisClient().(redis.UniversalClient)
	co := newCoalescer(rdb)
	enq.AddHook(co)
	return &Client{
		rdb:       rdb,
		enq:       enq,
		coalescer: co,
		wake:      newWaker(rdb),
		client:    asynq.NewClientFromRedisClient(enq),
		insp:      asynq.NewInspectorFromRedisClient(rdb),
		reg:       reg,
		queues:    queues,

		defaultRetention: tasks.DefaultRetention,
	}, nil
}

// SetDefaultRetention sets how long a completed task of a type that
// declares no Retention stays in Redis (TASK_RETENTION; default
// tasks.DefaultRetention). It is no floor: a type's own Retention, shorter
// or longer, wins. Call it before enqueueing.
func (c *Client) SetDefaultRetention(d time.Duration) { c.defaultRetention = d }

// Close releases the Redis connections.
func (c *Client) Close() error {
	c.wake.stop()
	err := c.enq.Close()
	c.coalescer.Close()
	return errors.Join(err, c.rdb.Close())
}

// Redis returns the underlying connection (shared with the scheduler lease
// and health checks): a *redis.ClusterClient on a cluster, so anything that
// uses it must keep each script's keys in one hash slot.
func (c *Client) Redis() redis.UniversalClient { return c.rdb }

// Ping checks Redis.
func (c *Client) Ping(ctx context.Context) error { return c.rdb.Ping(ctx).Err() }

// Request is a generic enqueue request as the API receives it. Pointer fields
// are optional; nil means the task type's default.
type Request struct {
	Type      string
	Payload   json.RawMessage
	Queue     string
	MaxRetry  *int
	Countdown *int64 // seconds
	ETA       *time.Time
	Timeout   *int64 // seconds
	UniqueFor *int64 // seconds
	TaskID    string // the caller's: refused in Conveyor's own namespaces (ReservedTaskID)
	// DerivedTaskID is used when TaskID is empty: an ID the server derived
	// itself (from an Idempotency-Key), so it may lie in a reserved namespace.
	DerivedTaskID string
	RequestID     string
	// ExpiresAt: the task is archived unstarted if it has not started by
	// then (nil: the type's default, if any).
	ExpiresAt *time.Time
	// Retention (seconds) is how long the completed task and its result
	// stay readable, instead of its type's retention (nil): a caller that
	// reads the result of a type that keeps nothing asks for it; 0 keeps
	// nothing.
	Retention *int64
}

// maxRetention bounds a caller's retention: a month of completed tasks is
// already a lot of Redis memory.
const maxRetention = 30 * 24 * 3600

var validID = regexp.MustCompile(`^[A-Za-z0-9_.:\-]{1,200}$`)

// reservedPrefixes are the task ID namespaces Conveyor derives IDs in:
// schedule ticks and manual fires (schedule:<name>:…), Idempotency-Keys
// (idem-…), workflow steps (wf:…) and anything internal (conveyor:…).
var reservedPrefixes = []string{"schedule:", "idem-", "wf:", "workflow:", "conveyor:"}

// ReservedTaskID reports whether id lies in one of Conveyor's own task ID
// namespaces, which callers of POST /api/v1/tasks may not use: a chosen
// schedule:<name>:<tick> would turn the real tick into a "duplicate", and a
// chosen outbox or idempotency ID would block the task it belongs to.
// Prefixes are compared case-insensitively (Schedule: is refused too).
func ReservedTaskID(id string) bool {
	lower := strings.ToLower(id)
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(lower, p) {
			return true
		}
	}
	return store.IsUUID(id)
}

// Enqueue validates r against the registry and enqueues it. Errors:
// tasks.ErrUnknownType, tasks.FieldErrors (field names: "type", "payload.<f>",
// "queue", "max_retry", …), ErrConflict (task_id in use or unique_for lock
// held), or a Redis error.
func (c *Client) Enqueue(ctx context.Context, r Request) (TaskInfo, error) {
	p, err := c.Prepare(r)
	if err != nil {
		return TaskInfo{}, err
	}
	return c.enqueue(ctx, p.task, p.opts...)
}

// Prepared is a validated request, ready to enqueue (EnqueuePrepared,
// EnqueueBatch).
type Prepared struct {
	task *asynq.Task
	opts []asynq.Option // enqueue options that win over the client's (the caller's retention)
}

// EnqueuePrepared enqueues one prepared request, with Enqueue's errors.
func (c *Client) EnqueuePrepared(ctx context.Context, p Prepared) (TaskInfo, error) {
	return c.enqueue(ctx, p.task, p.opts...)
}

// Prepare validates r against the registry and builds its task without
// enqueueing it, with the errors of Enqueue; EnqueueBatch then enqueues
// many, so a batch is validated whole before anything is enqueued.
func (c *Client) Prepare(r Request) (Prepared, error) {
	typ, ok := c.reg.Lookup(r.Type)
	if !ok {
		return Prepared{}, tasks.FieldErrors{"type": fmt.Sprintf("unknown task type %q", r.Type)}
	}
	p, err := c.reg.Decode(r.Type, r.Payload)
	if err != nil {
		var fe tasks.FieldErrors
		if errors.As(err, &fe) {
			prefixed := tasks.FieldErrors{}
			for k, v := range fe {
				if k == "payload" {
					prefixed[k] = v
				} else {
					prefixed["payload."+k] = v
				}
			}
			return Prepared{}, prefixed
		}
		return Prepared{}, err
	}
	opts, err := c.options(r, typ)
	if err != nil {
		return Prepared{}, err
	}
	var headers map[string]string
	if r.RequestID != "" {
		headers = map[string]string{tasks.HeaderRequestID: r.RequestID}
	}
	if r.ExpiresAt != nil {
		headers = tasks.WithExpiry(headers, *r.ExpiresAt)
	}
	var keep []asynq.Option
	if r.Retention != nil {
		keep = []asynq.Option{asynq.Retention(time.Duration(*r.Retention) * time.Second)}
		if *r.Retention > 0 {
			if headers == nil {
				headers = map[string]string{}
			}
			headers[tasks.HeaderKeepResult] = "1" // so the worker writes the result of a type that keeps nothing
		}
	}
	t, err := tasks.NewWithHeaders(p, headers, opts...)
	return Prepared{task: t, opts: keep}, err
}

// batchParallelism bounds how many enqueues of one batch are in flight.
const batchParallelism = 32

// EnqueueBatch enqueues prepared tasks (from Prepare) with up to
// batchParallelism enqueues in flight, whose commands share pipelines
// (pipeline.go): asynq's client has no batch enqueue, so a batch is many
// concurrent enqueues sent together. It returns one info and one error per
// task, in order: each task succeeds or fails alone (ErrConflict for a task
// ID already in use).
func (c *Client) EnqueueBatch(ctx context.Context, ts []Prepared) ([]TaskInfo, []error) {
	infos, errs := make([]TaskInfo, len(ts)), make([]error, len(ts))
	var wg sync.WaitGroup
	sem := make(chan struct{}, batchParallelism)
	for i, t := range ts {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			infos[i], errs[i] = c.enqueue(ctx, t.task, t.opts...)
		}()
	}
	wg.Wait()
	return infos, errs
}

// EnqueueTask enqueues a task built with tasks.New (outbox relay, scheduler).
func (c *Client) EnqueueTask(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (TaskInfo, error) {
	return c.enqueue(ctx, t, opts...)
}

// Retention is how long t stays in Redis once completed, as every producer
// enqueues it: the rule of tasks.Registry.Retention (the type's own
// retention, TASK_RETENTION for a type that declares none, a workflow
// step's task included). There is no global floor: a
// chosen task ID (outbox row, schedule tick) deduplicates only while its
// task is kept, and the consumers do not depend on more (see
// tasks/retention.go); the scheduler passes its own dedupe window.
func (c *Client) Retention(t *asynq.Task) time.Duration {
	return c.reg.Retention(t.Type(), t.Headers(), c.defaultRetention)
}

func (c *Client) enqueue(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (TaskInfo, error) {
	// First, so that a caller's own Retention option still wins.
	opts = append([]asynq.Option{asynq.Retention(c.Retention(t))}, opts...)
	info, err := c.client.EnqueueContext(ctx, t, opts...)
	if errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask) {
		return TaskInfo{}, fmt.Errorf("enqueue %s: %w", t.Type(), ErrConflict)
	}
	if err != nil {
		return TaskInfo{}, fmt.Errorf("enqueue %s: %w: %w", t.Type(), ErrUnavailable, err)
	}
	if info.State == asynq.TaskStatePending {
		c.wake.signal(info.Queue) // an idle worker picks it up now, not at its next poll (wake.go)
	}
	return fromInfo(info), nil
}

// options turns the request's optional fields into asynq options, naming the
// field of the first problem.
func (c *Client) options(r Request, typ tasks.Type) ([]asynq.Option, error) {
	bad := tasks.FieldErrors{}
	var opts []asynq.Option
	if r.Queue != "" {
		if _, ok := c.queues[r.Queue]; !ok {
			bad["queue"] = fmt.Sprintf("queue %q is not served by the workers (WORKER_QUEUES: %v)", r.Queue, sortedKeys(c.queues))
		} else {
			opts = append(opts, asynq.Queue(r.Queue))
		}
	} else if _, ok := c.queues[typ.Opts.Queue]; !ok {
		bad["queue"] = fmt.Sprintf("the default queue %q of %s is not served by the workers (WORKER_QUEUES)", typ.Opts.Queue, typ.Name)
	}
	if r.MaxRetry != nil {
		if *r.MaxRetry < 0 || *r.MaxRetry > 100 {
			bad["max_retry"] = "must be between 0 and 100"
		} else {
			opts = append(opts, asynq.MaxRetry(*r.MaxRetry))
		}
	}
	if r.Countdown != nil && r.ETA != nil {
		bad["eta"] = "give either countdown or eta, not both"
	}
	if r.Countdown != nil {
		if *r.Countdown < 0 || *r.Countdown > 365*24*3600 {
			bad["countdown"] = "must be between 0 and 31536000 seconds"
		} else if *r.Countdown > 0 {
			opts = append(opts, asynq.ProcessIn(time.Duration(*r.Countdown)*time.Second))
		}
	}
	if r.ETA != nil && r.Countdown == nil {
		if r.ETA.After(time.Now().Add(365 * 24 * time.Hour)) {
			bad["eta"] = "must be within a year"
		} else {
			opts = append(opts, asynq.ProcessAt(*r.ETA))
		}
	}
	if r.Timeout != nil {
		if *r.Timeout < 1 || *r.Timeout > 24*3600 {
			bad["timeout"] = "must be between 1 and 86400 seconds"
		} else {
			opts = append(opts, asynq.Timeout(time.Duration(*r.Timeout)*time.Second))
		}
	}
	if r.UniqueFor != nil {
		if *r.UniqueFor < 1 || *r.UniqueFor > 7*24*3600 {
			bad["unique_for"] = "must be between 1 and 604800 seconds"
		} else {
			opts = append(opts, asynq.Unique(time.Duration(*r.UniqueFor)*time.Second))
		}
	}
	if r.Retention != nil && (*r.Retention < 0 || *r.Retention > maxRetention) {
		bad["retention"] = "must be between 0 and 2592000 seconds (30 days)"
	}
	if r.TaskID != "" {
		if !validID.MatchString(r.TaskID) {
			bad["task_id"] = "must be 1-200 characters of letters, digits and _.:-"
		} else if ReservedTaskID(r.TaskID) {
			bad["task_id"] = "is in a namespace Conveyor derives task IDs in (schedule:…, idem-…, wf:…, conveyor:…, or a UUID as outbox rows use): choose another ID"
		} else {
			opts = append(opts, asynq.TaskID(r.TaskID))
		}
	} else if r.DerivedTaskID != "" {
		opts = append(opts, asynq.TaskID(r.DerivedTaskID))
	}
	if len(bad) > 0 {
		return nil, bad
	}
	return opts, nil
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sortedStrings(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}
