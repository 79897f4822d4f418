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
}

// CreatedOrder is a new order with the IDs of the tasks it triggered: its
// workflow's steps, order:process then email:order_confirmation (they become
// the asynq task IDs once each step is enqueued).
type CreatedOrder struct {
	Order   store.Order
	TaskIDs []string
	// Outbox are the outbox rows the order added (its first step's), to
	// hand to a queue.Dispatcher once tx has committed.
	Outbox []string
}

// Steps of an order's workflow.
const (
	OrderStepProcess = "process"
	OrderStepConfirm = "confirm"
)

// CreateOrder inserts a pending order and, in the same transaction, starts
// the workflow that fulfils it: order:process, then the confirmation email
// only once processing has succeeded (an order that fails sends none).
func CreateOrder(ctx context.Context, tx *sqlx.Tx, in NewOrder) (CreatedOrder, error) {
	o, err := store.NewOrders(tx).CreateForWorkflow(ctx, in.UserID, in.Currency, in.Items)
	if err != nil {
		return CreatedOrder{}, err
	}
	reg := in.Tasks
	if reg == nil {
		reg = tasks.All()
	}
	spec := workflow.Chain(
		workflow.Task(OrderStepProcess, tasks.OrderProcessPayload{OrderID: o.ID}),
		workflow.Task(OrderStepConfirm, tasks.EmailOrderConfirmationPayload{OrderID: o.ID}),
	).Named(fmt.Sprintf("order %d", o.ID))
	v, err := workflow.Start(ctx, tx, reg, spec, workflow.StartOptions{RequestID: in.RequestID, ID: *o.WorkflowID})
	if err != nil {
		return CreatedOrder{}, err
	}
	out := CreatedOrder{Order: o, Outbox: v.Outbox()}
	for _, s := range v.Steps {
		out.TaskIDs = append(out.TaskIDs, s.TaskID)
	}
	return out, nil
}
