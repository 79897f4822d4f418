// Package service holds Conveyor's business operations: each takes the
// caller's *sqlx.Tx and writes its rows together with the outbox rows of the
// work they trigger, so the work exists if and only if the write commits.
// The HTTP handlers only decode, authorize, call a function here and encode;
// any other producer (a CLI, a task handler, a test) calls the same code.
package service

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/workflow"
	"github.com/conveyor-run/conveyor/tasks"
)

// AddTask validates p and adds its task to the outbox in tx. It returns the
// future task ID (the outbox row's). requestID, if any, travels with the task
// so worker logs can be joined to the request that caused it.
func AddTask(ctx context.Context, tx *sqlx.Tx, p tasks.Payload, requestID string) (string, error) {
	if err := p.Validate(); err != nil {
		return "", fmt.Errorf("outbox %s: %w", p.TypeName(), err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("outbox %s: %w", p.TypeName(), err)
	}
	return store.NewOutbox(tx).Add(ctx, p.TypeName(), b, requestID)
}

// Register creates the user account u (its ID and timestamps are filled in)
// and the outbox row of its welcome email, whose ID it returns (for a
// queue.Dispatcher once tx has committed). An email already taken is
// store.ErrConflict.
func Register(ctx context.Context, tx *sqlx.Tx, u *store.User, requestID string) (outboxID string, err error) {
	if err := store.NewUsers(tx).Create(ctx, u); err != nil {
		return "", err
	}
	return AddTask(ctx, tx, tasks.EmailWelcomePayload{UserID: u.ID}, requestID)
}

// NewOrder is what CreateOrder needs: validated input.
type NewOrder struct {
	UserID    int64
	Currency  string
	Items     []store.OrderItem
	RequestID string
	// Tasks validates the order's workflow; nil: tasks.All().
	Tasks *tasks.Registry
	// IDs gives the order its ID; nil: one is reserved for it through q
	// (one more round trip).
	IDs *OrderIDs
}

// CreatedOrder is a new order with the IDs of the tasks it triggered: its
// workflow's steps, order:process then email:order_confirmation (they become
// the asynq task IDs once each step is enqueued).
type CreatedOrder struct {
	Order   store.Order
	TaskIDs []string
	// Outbox are the outbox rows the order added (its first step's), to
	// hand to a queue.Dispatcher once they have committed.
	Outbox []string
}

// Steps of an order's workflow.
const (
	OrderStepProcess = "process"
	OrderStepConfirm = "confirm"
)

// CreateOrder inserts a pending order and the workflow that fulfils it:
// order:process, then the confirmation email only once processing has
// succeeded (an order that fails sends none). The order, its workflow and
// the outbox row of its first task are one statement
// (store.Orders.CreateWithWorkflow), so they commit together or not at all
// whether q is a transaction or the database itself: POST /api/v1/orders
// without an Idempotency-Key runs it outside any transaction.
func CreateOrder(ctx context.Context, q store.Querier, in NewOrder) (CreatedOrder, error) {
	out, err := CreateOrders(ctx, q, []NewOrder{in})
	if err != nil {
		return CreatedOrder{}, err
	}
	return out[0], nil
}

// CreateOrders is CreateOrder for many orders in one statement: they
// commit together or not at all. The api gathers the orders of concurrent
// requests into one (group commit); it returns them in ins's order.
func CreateOrders(ctx context.Context, q store.Querier, ins []NewOrder) ([]CreatedOrder, error) {
	os, nws := make([]store.NewOrder, len(ins)), make([]store.NewWorkflow, len(ins))
	for i, in := range ins {
		id, err := in.IDs.next(ctx, q)
		if err != nil {
			return nil, err
		}
		reg := in.Tasks
		if reg == nil {
			reg = tasks.All()
		}
		spec := workflow.Chain(
			workflow.Task(OrderStepProcess, tasks.OrderProcessPayload{OrderID: id}),
			workflow.Task(OrderStepConfirm, tasks.EmailOrderConfirmationPayload{OrderID: id}),
		).Named(fmt.Sprintf("order %d", id))
		if nws[i], err = workflow.Prepare(reg, spec, workflow.StartOptions{RequestID: in.RequestID}); err != nil {
			return nil, err
		}
		os[i] = store.NewOrder{ID: id, UserID: in.UserID, Currency: in.Currency, Items: in.Items}
	}
	orders, steps, err := store.NewOrders(q).CreateManyWithWorkflows(ctx, os, nws)
	if err != nil {
		return nil, err
	}
	out := make([]CreatedOrder, len(ins))
	for i := range out {
		out[i].Order = orders[i]
		for _, s := range steps[i] {
			out[i].TaskIDs = append(out[i].TaskIDs, s.TaskID)
			if s.State == store.StepEnqueued {
				out[i].Outbox = append(out[i].Outbox, s.TaskID)
			}
		}
	}
	return out, nil
}

// OrderIDs hands out order IDs reserved from the orders' sequence a block
// at a time, so that CreateOrder knows an order's ID (its tasks' payloads
// carry it) without a round trip of its own. IDs of a block the process
// never uses are gaps in the sequence, as rolled-back inserts leave; IDs
// still grow, but orders from several api processes interleave out of ID
// order (lists sort by created_at). Safe for concurrent use.
type OrderIDs struct {
	db    store.Querier
	block int

	mu   sync.Mutex
	free []int64
}

// NewOrderIDs returns an allocator reserving block IDs at a time through d
// (outside any caller's transaction: a rollback must not return reserved
// IDs that were handed out).
func NewOrderIDs(d *sqlx.DB, block int) *OrderIDs {
	return &OrderIDs{db: d, block: max(block, 1)}
}

// next returns an unused order ID: from the block when a is not nil,
// otherwise reserved through q.
func (a *OrderIDs) next(ctx context.Context, q store.Querier) (int64, error) {
	if a == nil {
		ids, err := store.NewOrders(q).ReserveIDs(ctx, 1)
		if err != nil {
			return 0, err
		}
		return ids[0], nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.free) == 0 {
		ids, err := store.NewOrders(a.db).ReserveIDs(ctx, a.block)
		if err != nil {
			return 0, err
		}
		a.free = ids
	}
	id := a.free[0]
	a.free = a.free[1:]
	return id, nil
}
