package tasks

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/conveyor-run/conveyor/internal/stack"
	"github.com/conveyor-run/conveyor/internal/store"
)

// TypeOrderProcess moves an order pending → completed, through processing
// while a fulfilment delay (ORDER_PROCESS_DELAY) lasts. It is
// idempotent (a finished order is left alone) and marks the order failed
// once its retries are exhausted or the order cannot be processed at all.
const TypeOrderProcess = "order:process" // on the wire: never rename in place

// OrderProcessPayload is the payload of order:process.
type OrderProcessPayload struct {
	OrderID int64 `json:"order_id"`
}

// TypeName implements Payload.
func (OrderProcessPayload) TypeName() string { return TypeOrderProcess }

// Opts implements Payload.
func (OrderProcessPayload) Opts() Opts {
	return Opts{Queue: "default", MaxRetry: 5, Timeout: 5 * time.Minute, Retention: 24 * time.Hour,
		RetryBase: 10 * time.Second, RetryCap: 10 * time.Minute}
}

// Validate implements Payload.
func (p OrderProcessPayload) Validate() error {
	if p.OrderID <= 0 {
		return FieldErrors{"order_id": "must be a positive integer"}
	}
	return nil
}

func handleOrderProcess(d Deps) Handler[OrderProcessPayload] {
	return func(ctx context.Context, p OrderProcessPayload) error {
		stack.GrowDeep() // JSON by reflection, templates, SMTP: deeper than the 16 KB every task gets
		orders := d.orders()
		err := processOrder(ctx, orders, p.OrderID, d.OrderProcessDelay)
		// A cancelled context is not the order's fault: the worker is
		// shutting down (asynq puts the task back) or an operator cancelled
		// the task. Only a real failure on the last attempt (a timeout
		// included) fails the order.
		cancelled := errors.Is(err, context.Canceled)
		if err != nil && !errors.Is(err, store.ErrNotFound) && !cancelled && (isPermanent(err) || CurrentAttempt(ctx).Last()) {
			// Last chance: record the failure on the order itself.
			if _, _, fErr := orders.Transition(context.WithoutCancel(ctx), p.OrderID, store.OrderFailed,
				store.OrderPending, store.OrderProcessing); fErr != nil {
				return errors.Join(err, fErr)
			}
		}
		return err
	}
}

// processOrder completes order id. With a fulfilment delay the order is
// processing while it lasts; without one, it goes from pending to completed
// in one write (read, check, then one durable commit instead of two).
func processOrder(ctx context.Context, orders orderRows, id int64, delay time.Duration) error {
	var o store.Order
	var err error
	if delay > 0 {
		o, _, err = orders.Transition(ctx, id, store.OrderProcessing, store.OrderPending)
	} else {
		o, err = orders.Get(ctx, id)
	}
	if errors.Is(err, store.ErrNotFound) {
		return Permanent(err)
	}
	if err != nil {
		return err
	}
	switch o.Status {
	case store.OrderCompleted, store.OrderFailed:
		return SetResult(ctx, map[string]any{"order_id": id, "status": o.Status, "already_done": true})
	case store.OrderProcessing, store.OrderPending:
		// Ours, or left processing by an attempt that died: carry on either
		// way.
	default:
		return fmt.Errorf("order %d in unexpected status %q", id, o.Status)
	}

	if delay > 0 { // simulated fulfilment (ORDER_PROCESS_DELAY)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}

	items, err := o.Items()
	if err != nil {
		return Permanent(err)
	}
	if len(items) == 0 {
		return Permanent(fmt.Errorf("order %d has no items", id))
	}
	var total int64
	for _, it := range items {
		total += it.Quantity * it.UnitPriceCents
	}
	if total != o.TotalCents {
		return Permanent(fmt.Errorf("order %d total %d does not match its items (%d)", id, o.TotalCents, total))
	}

	done, _, err := orders.Transition(ctx, id, store.OrderCompleted, store.OrderPending, store.OrderProcessing)
	if err != nil {
		return err
	}
	return SetResult(ctx, map[string]any{"order_id": id, "status": done.Status, "total_cents": done.TotalCents})
}
