package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

// outboxSender turns locked outbox rows into asynq tasks and records the
// outcome: the one mechanism behind both the Relay (rows found by polling)
// and the Dispatcher (rows named by their producer right after commit).
type outboxSender struct {
	client *Client
	log    *slog.Logger
	opts   RelayOptions
}

// sendLocked enqueues rows, which a transaction has taken (store.Outbox.Take
// or TakeDue: locked and marked sent), with up to batchParallelism enqueues
// in flight (asynq has no pipelined enqueue), then records in that
// transaction, through q (the transaction or its prepared statements), each
// failure: the row is put back with its backoff, or dead after DeadAttempts
// when it can never become a task. It returns how many rows failed.
//
// The transaction commits asynchronously (the take statement made it so):
// losing the "sent" marks in a PostgreSQL crash only makes those rows due
// again, and a row sent twice is still one task. The second enqueue uses
// the same task ID, which asynq refuses while the first task is kept (its
// type's retention, see tasks/retention.go): counted as sent. And past that
// window the consumers tolerate a repeat: a workflow step's task is dropped
// unless its step is still `enqueued`, emails deduplicate on their key in
// email_log, order:process moves an order only from pending. What must
// survive a crash — the row itself, written by the producer's durable
// commit — does.
func (s *outboxSender) sendLocked(ctx context.Context, q store.Querier, rows []store.OutboxEntry) (failed int, err error) {
	if len(rows) == 0 {
		return 0, nil
	}
	errs := make([]error, len(rows))
	var wg sync.WaitGroup
	sem := make(chan struct{}, batchParallelism)
	for i := range rows {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = s.send(ctx, rows[i])
		}()
	}
	wg.Wait()

	ob := store.NewOutbox(q)
	for i, row := range rows {
		if errs[i] == nil {
			continue
		}
		failed++
		if err := s.recordFailure(ctx, ob, row, errs[i]); err != nil {
			return failed, err
		}
	}
	return failed, nil
}

// recordFailure reschedules row after a failed send with exponential
// backoff, or marks it dead once it has failed DeadAttempts times for a
// reason no retry can fix (unknown type, invalid payload).
func (s *outboxSender) recordFailure(ctx context.Context, ob *store.Outbox, row store.OutboxEntry, sendErr error) error {
	backoff := tasks.BackoffCeiling(row.Attempts, s.opts.RetryBase, s.opts.RetryCap)
	if !errors.Is(sendErr, errUnsendable) {
		// Most often Redis is unreachable.
		s.log.Warn("outbox row not enqueued; will retry", "outbox_id", row.ID, "task_type", row.TaskType,
			"attempts", row.Attempts+1, "retry_in", backoff, "err", sendErr)
		return ob.MarkFailed(ctx, row.ID, sendErr.Error(), backoff)
	}
	if row.Attempts+1 >= s.opts.DeadAttempts {
		s.log.Error("outbox row can never become a task: marked dead", "outbox_id", row.ID, "task_type", row.TaskType,
			"attempts", row.Attempts+1, "err", sendErr)
		return ob.MarkDead(ctx, row.ID, sendErr.Error())
	}
	s.log.Warn("outbox row cannot become a task; will retry before giving up", "outbox_id", row.ID, "task_type", row.TaskType,
		"attempts", row.Attempts+1, "dead_after_attempts", s.opts.DeadAttempts, "retry_in", backoff, "err", sendErr)
	return ob.MarkFailed(ctx, row.ID, sendErr.Error(), backoff)
}

// errUnsendable marks a row that no relay of this version can turn into a
// task, as opposed to a failure to reach Redis.
var errUnsendable = errors.New("cannot become a task")

// send enqueues row as a task whose ID is the row's, forwarding the stored
// payload bytes. A task already holding that ID means an earlier attempt
// got it out: that is success.
func (s *outboxSender) send(ctx context.Context, row store.OutboxEntry) error {
	typ, ok := s.client.reg.Lookup(row.TaskType)
	if !ok {
		return fmt.Errorf("%w: %w %q", errUnsendable, tasks.ErrUnknownType, row.TaskType)
	}
	// Checked leniently, as the worker will (the row may predate a field's
	// removal), but not re-encoded: the stored bytes go out as they are.
	if _, err := s.client.reg.DecodeStored(row.TaskType, row.Payload); err != nil {
		return fmt.Errorf("%w: payload: %w", errUnsendable, err)
	}
	opts, headers, err := rowOptions(row.Options) // outbox_options.go
	if err != nil {
		return fmt.Errorf("%w: %w", errUnsendable, err)
	}
	if row.RequestID != "" {
		if headers == nil {
			headers = map[string]string{}
		}
		headers[tasks.HeaderRequestID] = row.RequestID
	}
	// Retention: Client.Retention (the type's), applied by EnqueueTask.
	t := typ.TaskFromStored(row.Payload, headers, append([]asynq.Option{asynq.TaskID(row.ID)}, opts...)...)
	ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := s.client.EnqueueTask(ectx, t)
	switch {
	case errors.Is(err, ErrConflict):
		s.log.Info("outbox row was already enqueued", "outbox_id", row.ID, "task_type", row.TaskType)
		return nil
	case err != nil:
		return err
	}
	s.log.Debug("outbox row enqueued", "outbox_id", row.ID, "task_id", info.ID, "task_type", info.Type, "queue", info.Queue)
	return nil
}
