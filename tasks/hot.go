package tasks

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/conveyor-run/conveyor/internal/batch"
	"github.com/conveyor-run/conveyor/internal/store"
)

// The statements every order's two tasks run, gathered across the tasks
// running at the same time (internal/batch): order:process reads the order
// and completes it, email:order_confirmation reads the order with its
// customer, claims the email's dedup key and marks it sent. One at a time
// these were five round trips and three durable commits per order; at
// hundreds of orders a second PostgreSQL spent more on running that many
// statements and commits than on the rows. Gathered, a handful of tasks
// share each statement and each commit. Each call still returns only once
// its statement has committed, so a handler's guarantees are those of the
// single-row statement: the order is completed, the key claimed (before the
// email is sent) and the email marked sent, durably, before the task goes
// on.

// orderRows is what the order tasks read and write: a *store.Orders, or the
// worker's gathered statements (hotPath).
type orderRows interface {
	Get(ctx context.Context, id int64) (store.Order, error)
	GetWithCustomer(ctx context.Context, id int64) (store.Order, store.User, error)
	Transition(ctx context.Context, id int64, to string, from ...string) (store.Order, bool, error)
}

// emailRows is what sendOnce reads and writes: a *store.EmailLog, or the
// worker's gathered statements (hotPath).
type emailRows interface {
	Claim(ctx context.Context, e store.EmailEntry) (bool, store.EmailEntry, error)
	MarkSent(ctx context.Context, key string) error
	MarkFailed(ctx context.Context, key, reason string) error
	Release(ctx context.Context, key string) error
}

// hotBatchMax bounds the rows of one gathered statement; hotBatchTimeout
// bounds its run.
//
// A statement that finds its batcher busy (the last batch ended less than
// hotBusy ago) waits up to hotLinger for more calls, unless hotLingerBelow
// are already waiting: at a steady few hundred orders a second the calls
// come one by one, and without the wait each would be a statement and a
// commit of its own (measured at 500 orders/s: ~2 calls per statement
// without, ~4 with). An idle worker's first call goes at once.
const (
	hotBatchMax     = 500
	hotBatchTimeout = 10 * time.Second
	hotLinger       = 2 * time.Millisecond
	hotLingerBelow  = 64
	hotBusy         = 5 * time.Millisecond
)

// hotPath gathers the order tasks' statements; its methods implement
// orderRows and emailRows. The rare paths (an order that cannot complete,
// a key already claimed, a failed send) run their statements alone.
type hotPath struct {
	orders *store.Orders
	emails *store.EmailLog

	getOrder     *batch.Coalescer[int64, found[store.Order]]
	withCustomer *batch.Coalescer[int64, found[store.OrderCustomer]]
	complete     *batch.Coalescer[int64, found[store.Order]]
	claim        *batch.Coalescer[store.EmailEntry, bool]
	markSent     *batch.Coalescer[string, struct{}]
}

// found is a row looked up by key, or not found.
type found[T any] struct {
	row T
	ok  bool
}

// byID answers ids from m in order.
func byID[T any](ids []int64, m map[int64]T) []found[T] {
	out := make([]found[T], len(ids))
	for i, id := range ids {
		out[i].row, out[i].ok = m[id]
	}
	return out
}

// newHotPath gathers statements run through q (the worker's prepared
// statements).
func newHotPath(q store.Querier) *hotPath {
	h := &hotPath{orders: store.NewOrders(q), emails: store.NewEmailLog(q)}
	bo := []batch.Option{batch.Linger(hotLinger, hotLingerBelow), batch.Busy(hotBusy)}
	h.getOrder = batch.New(hotBatchMax, hotBatchTimeout, func(ctx context.Context, ids []int64) ([]found[store.Order], error) {
		m, err := h.orders.GetMany(ctx, ids)
		return byID(ids, m), err
	}, bo...)
	h.withCustomer = batch.New(hotBatchMax, hotBatchTimeout, func(ctx context.Context, ids []int64) ([]found[store.OrderCustomer], error) {
		m, err := h.orders.GetManyWithCustomer(ctx, ids)
		return byID(ids, m), err
	}, bo...)
	h.complete = batch.New(hotBatchMax, hotBatchTimeout, func(ctx context.Context, ids []int64) ([]found[store.Order], error) {
		m, err := h.orders.TransitionMany(ctx, ids, store.OrderCompleted, completableFrom...)
		return byID(ids, m), err
	}, bo...)
	h.claim = batch.New(hotBatchMax, hotBatchTimeout, h.emails.ClaimMany, bo...)
	h.markSent = batch.New(hotBatchMax, hotBatchTimeout, func(ctx context.Context, keys []string) ([]struct{}, error) {
		return make([]struct{}, len(keys)), h.emails.MarkSentMany(ctx, keys)
	}, bo...)
	return h
}

// completableFrom are the statuses order:process completes an order from.
var completableFrom = []string{store.OrderPending, store.OrderProcessing}

// Get implements orderRows.
func (h *hotPath) Get(_ context.Context, id int64) (store.Order, error) {
	f, err := h.getOrder.Do(id)
	if err != nil {
		return store.Order{}, err
	}
	if !f.ok {
		return store.Order{}, fmt.Errorf("get order %d: %w", id, store.ErrNotFound)
	}
	return f.row, nil
}

// GetWithCustomer implements orderRows.
func (h *hotPath) GetWithCustomer(_ context.Context, id int64) (store.Order, store.User, error) {
	f, err := h.withCustomer.Do(id)
	if err != nil {
		return store.Order{}, store.User{}, err
	}
	if !f.ok {
		return store.Order{}, store.User{}, fmt.Errorf("get order %d with its customer: %w", id, store.ErrNotFound)
	}
	return f.row.Order, f.row.User, nil
}

// Transition implements orderRows: completing an order is gathered, any
// other move runs alone.
func (h *hotPath) Transition(ctx context.Context, id int64, to string, from ...string) (store.Order, bool, error) {
	if to != store.OrderCompleted || !slices.Equal(from, completableFrom) {
		return h.orders.Transition(ctx, id, to, from...)
	}
	f, err := h.complete.Do(id)
	if err != nil {
		return store.Order{}, false, err
	}
	if f.ok {
		return f.row, true, nil
	}
	o, err := h.Get(ctx, id) // not moved: as it is
	return o, false, err
}

// Claim implements emailRows.
func (h *hotPath) Claim(ctx context.Context, e store.EmailEntry) (bool, store.EmailEntry, error) {
	claimed, err := h.claim.Do(e)
	if err != nil || claimed {
		return claimed, store.EmailEntry{}, err
	}
	existing, err := h.emails.Get(ctx, e.DedupKey)
	return false, existing, err
}

// MarkSent implements emailRows.
func (h *hotPath) MarkSent(_ context.Context, key string) error {
	_, err := h.markSent.Do(key)
	return err
}

// MarkFailed implements emailRows.
func (h *hotPath) MarkFailed(ctx context.Context, key, reason string) error {
	return h.emails.MarkFailed(ctx, key, reason)
}

// Release implements emailRows.
func (h *hotPath) Release(ctx context.Context, key string) error {
	return h.emails.Release(ctx, key)
}
