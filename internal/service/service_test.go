package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/conveyor-run/conveyor/internal/service"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/internal/workflow"
	"github.com/conveyor-run/conveyor/tasks"
)

func TestRegisterWritesUserAndWelcomeEmail(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testenv.Tx(t)

	u := store.User{Email: "ada@example.com", Name: "Ada"}
	outboxID, err := service.Register(ctx, tx, &u, "req-1")
	if err != nil {
		t.Fatal(err)
	}
	if u.ID == 0 {
		t.Fatal("user ID not filled in")
	}
	var rows []store.OutboxEntry
	if err := tx.SelectContext(ctx, &rows, `SELECT * FROM outbox`); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].TaskType != tasks.TypeEmailWelcome || rows[0].RequestID != "req-1" || rows[0].ID != outboxID {
		t.Fatalf("outbox = %+v, want one email:welcome row %s for req-1", rows, outboxID)
	}
	var p tasks.EmailWelcomePayload
	if err := json.Unmarshal(rows[0].Payload, &p); err != nil || p.UserID != u.ID {
		t.Fatalf("payload = %s (%v), want user_id %d", rows[0].Payload, err, u.ID)
	}

	dup := store.User{Email: "ADA@example.com", Name: "Other"}
	if _, err := service.Register(ctx, tx, &dup, ""); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate email: err = %v, want ErrConflict", err)
	}
}

func TestCreateOrderWritesOrderAndItsTasks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testenv.Tx(t)
	u := store.User{Email: "o@example.com", Name: "O"}
	if err := store.NewUsers(tx).Create(ctx, &u); err != nil {
		t.Fatal(err)
	}

	got, err := service.CreateOrder(ctx, tx, service.NewOrder{UserID: u.ID, Currency: "EUR",
		Items: []store.OrderItem{{SKU: "a", Quantity: 2, UnitPriceCents: 150}}, RequestID: "req-2"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Order.ID == 0 || got.Order.Status != store.OrderPending || got.Order.TotalCents != 300 {
		t.Fatalf("order = %+v", got.Order)
	}
	if len(got.TaskIDs) != 2 || got.Order.WorkflowID == nil || len(got.Outbox) != 1 || got.Outbox[0] != got.TaskIDs[0] {
		t.Fatalf("created = %+v, want two task IDs, a workflow and the first one's outbox row", got)
	}
	// order:process is in the outbox; the confirmation waits for it.
	row, err := store.NewOutbox(tx).Get(ctx, got.TaskIDs[0])
	if err != nil || row.TaskType != tasks.TypeOrderProcess || row.RequestID != "req-2" {
		t.Fatalf("process row = %+v, %v", row, err)
	}
	if _, err := store.NewOutbox(tx).Get(ctx, got.TaskIDs[1]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("confirmation enqueued before processing: %v", err)
	}
	v, err := workflow.Get(ctx, tx, *got.Order.WorkflowID)
	if err != nil {
		t.Fatal(err)
	}
	if v.State != "running" || len(v.Steps) != 2 || v.Steps[0].Type != tasks.TypeOrderProcess ||
		v.Steps[1].Type != tasks.TypeEmailOrderConfirmation || v.Steps[1].State != "waiting" || v.Steps[1].TaskID != got.TaskIDs[1] {
		t.Fatalf("workflow = %+v", v)
	}
	stored, err := store.NewOrders(tx).Get(ctx, got.Order.ID)
	if err != nil || stored.WorkflowID == nil || *stored.WorkflowID != v.ID {
		t.Fatalf("stored order = %+v, %v", stored, err)
	}
}

func TestAddTaskRejectsInvalidPayload(t *testing.T) {
	t.Parallel()
	_, err := service.AddTask(context.Background(), testenv.Tx(t), tasks.OrderProcessPayload{}, "")
	var fe tasks.FieldErrors
	if !errors.As(err, &fe) || fe["order_id"] == "" {
		t.Fatalf("err = %v, want FieldErrors naming order_id", err)
	}
}
