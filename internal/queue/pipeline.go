package queue

import (
	"context"
	"errors"
	"net"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Enqueueing is one Redis round trip per task: asynq's client runs one Lua
// script per enqueue and has no pipelined or batch enqueue in its public API,
// and its task encoding and scripts live in internal packages, so Conveyor
// cannot write asynq's keys itself without copying those internals. What it
// can do, with public APIs only, is hand asynq a Redis client whose commands
// are not sent one by one: coalescer is a go-redis hook that collects the
// commands of concurrent enqueues (the requests of many HTTP connections,
// the items of a batch) and sends them to Redis as one pipeline. asynq's
// commands, scripts and data are unchanged; only the number of writes,
// reads and wake-ups on both sides shrinks.
//
// There is no timer: a pipeline holds whatever arrived while the previous
// ones were on the wire, so a lone enqueue goes out at once and only
// concurrent ones are batched.

// coalescerPipelines is how many pipelines may be in flight at once, and
// coalescerMaxBatch the most commands in one.
const (
	coalescerPipelines = 4
	coalescerMaxBatch  = 256
)

// coalescedCmd is one command waiting for its pipeline.
type coalescedCmd struct {
	cmd  redis.Cmder
	done chan struct{}
}

// coalescer is a go-redis hook: every command of the client it is added to
// runs as part of a pipeline on exec, a client without the hook (the pool
// that really talks to Redis). Add it only to a client used for commands
// that can share a pipeline: no blocking commands, no MULTI, no pub/sub.
type coalescer struct {
	exec redis.UniversalClient
	cmds chan *coalescedCmd
	stop chan struct{}

	mu     sync.RWMutex // held for reading while a command is queued
	closed bool
}

// newCoalescer starts the goroutines that send the pipelines; Close stops
// them.
func newCoalescer(exec redis.UniversalClient) *coalescer {
	c := &coalescer{exec: exec, cmds: make(chan *coalescedCmd, coalescerMaxBatch), stop: make(chan struct{})}
	for range coalescerPipelines {
		go c.loop()
	}
	return c
}

// Close refuses new commands (redis.ErrClosed) and stops the pipeline
// goroutines; commands already queued still get their answer.
func (c *coalescer) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.stop)
	}
}

func (c *coalescer) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return next(ctx, network, addr)
	}
}

// ProcessHook queues cmd for the next pipeline and waits until that
// pipeline has run: a command once queued is always sent and its reply
// read, so the caller never returns while the pipeline still writes into
// cmd (a cancelled context only stops a command not yet queued).
func (c *coalescer) ProcessHook(redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := ctx.Err(); err != nil {
			cmd.SetErr(err)
			return err
		}
		p := &coalescedCmd{cmd: cmd, done: make(chan struct{})}
		c.mu.RLock()
		if c.closed {
			c.mu.RUnlock()
			cmd.SetErr(redis.ErrClosed)
			return redis.ErrClosed
		}
		c.cmds <- p
		c.mu.RUnlock()
		<-p.done
		return cmd.Err()
	}
}

// ProcessPipelineHook leaves explicit pipelines alone.
func (c *coalescer) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// loop sends pipelines: it waits for one command, takes every other one
// already queued (up to coalescerMaxBatch), runs them together and wakes
// their callers.
func (c *coalescer) loop() {
	batch := make([]*coalescedCmd, 0, coalescerMaxBatch)
	cmds := make([]redis.Cmder, 0, coalescerMaxBatch)
	for {
		select {
		case p := <-c.cmds:
			batch = append(batch, p)
		case <-c.stop:
			// No command can be queued any more: run what is left.
			select {
			case p := <-c.cmds:
				batch = append(batch, p)
			default:
				return
			}
		}
	fill:
		for len(batch) < coalescerMaxBatch {
			select {
			case p := <-c.cmds:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		for _, p := range batch {
			cmds = append(cmds, p.cmd)
		}
		pipe := c.exec.Pipeline()
		_ = pipe.BatchProcess(context.Background(), cmds...)
		_, err := pipe.Exec(context.Background())
		failConnection(cmds, err)
		for i, p := range batch {
			close(p.done)
			batch[i], cmds[i] = nil, nil
		}
		batch, cmds = batch[:0], cmds[:0]
	}
}

// failConnection gives err, the error of a pipeline's Exec, to every one of
// cmds that has none. Each command carries its own reply or Redis error,
// except when the connection failed: when go-redis gives up retrying a
// pipeline because it cannot connect, it returns the error without setting
// it on the commands, which would then look successful with an empty reply
// (asynq would take its queue for registered, and never register it). A
// command whose answer is unknown is reported failed, as a single command
// whose connection broke would be.
func failConnection(cmds []redis.Cmder, err error) {
	var replyErr redis.Error
	if err == nil || errors.As(err, &replyErr) {
		return
	}
	for _, cmd := range cmds {
		if cmd.Err() == nil {
			cmd.SetErr(err)
		}
	}
}
