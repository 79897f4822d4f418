package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
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

// Without a transaction the order, its workflow and its first task's outbox
// row are still one statement: all of them commit, or none (here the user
// does not exist, so the order's foreign key fails after the workflow rows
// were written in the same statement).
func TestCreateOrderOutsideTransactionIsAllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t)
	q := store.NewPrepared(d)
	t.Cleanup(func() { _ = q.Close() })
	ids := service.NewOrderIDs(d, 3)
	u := store.User{Email: "solo@example.com", Name: "Solo"}
	if err := store.NewUsers(d).Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	items := []store.OrderItem{{SKU: "a", Quantity: 1, UnitPriceCents: 100}}
	counts := func() (n [4]int) {
		for i, table := range []string{"orders", "workflows", "workflow_steps", "outbox"} {
			if err := d.GetContext(ctx, &n[i], `SELECT count(*) FROM `+table); err != nil {
				t.Fatal(err)
			}
		}
		return n
	}

	if _, err := service.CreateOrder(ctx, q, service.NewOrder{UserID: u.ID + 1000, Currency: "EUR", Items: items, IDs: ids}); err == nil {
		t.Fatal("order for a user that does not exist was created")
	}
	if n := counts(); n != [4]int{} {
		t.Fatalf("after a failed order: orders, workflows, steps, outbox = %v, want none", n)
	}

	for range 5 { // more than one block of IDs
		got, err := service.CreateOrder(ctx, q, service.NewOrder{UserID: u.ID, Currency: "EUR", Items: items, IDs: ids})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Outbox) != 1 || got.Outbox[0] != got.TaskIDs[0] {
			t.Fatalf("created = %+v, want the first task's outbox row", got)
		}
		var p tasks.OrderProcessPayload
		row, err := store.NewOutbox(d).Get(ctx, got.Outbox[0])
		if err != nil || json.Unmarshal(row.Payload, &p) != nil || p.OrderID != got.Order.ID {
			t.Fatalf("outbox row = %+v (%v), want order:process for order %d", row, err, got.Order.ID)
		}
	}
	if n := counts(); n != [4]int{5, 5, 10, 5} {
		t.Fatalf("orders, workflows, steps, outbox = %v, want 5, 5, 10, 5", n)
	}
}

func TestOrderIDsAreDistinctUnderConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t)
	ids := service.NewOrderIDs(d, 7)
	u := store.User{Email: "many@example.com", Name: "Many"}
	if err := store.NewUsers(d).Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 10
	got := make(chan int64, workers*each)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				o, err := service.CreateOrder(ctx, d, service.NewOrder{UserID: u.ID, Currency: "EUR",
					Items: []store.OrderItem{{SKU: "a", Quantity: 1, UnitPriceCents: 1}}, IDs: ids})
				if err != nil {
					t.Error(err)
					return
				}
				got <- o.Order.ID
			}
		})
	}
	wg.Wait()
	close(got)
	seen := map[int64]bool{}
	for id := range got {
		if seen[id] {
			t.Fatalf("order ID %d handed out twice", id)
		}
		seen[id] = true
	}
	if len(seen) != workers*each {
		t.Fatalf("%d orders, want %d", len(seen), workers*each)
	}
}

// CreateOrders writes many orders in one statement: each its own workflow,
// steps, edge and first task's outbox row, answered in the order asked;
// and all or nothing: one order of a user that does not exist fails them
// all.
func TestCreateOrdersInOneStatement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t)
	ids := service.NewOrderIDs(d, 10)
	var users [3]store.User
	for i := range users {
		users[i] = store.User{Email: "many" + string(rune('a'+i)) + "@example.com", Name: "M"}
		if err := store.NewUsers(d).Create(ctx, &users[i]); err != nil {
			t.Fatal(err)
		}
	}
	in := make([]service.NewOrder, 6)
	for i := range in {
		in[i] = service.NewOrder{UserID: users[i%3].ID, Currency: "EUR", RequestID: "req-" + string(rune('a'+i)), IDs: ids,
			Items: []store.OrderItem{{SKU: "a", Quantity: int64(i + 1), UnitPriceCents: 100}}}
	}
	got, err := service.CreateOrders(ctx, d, in)
	if err != nil {
		t.Fatal(err)
	}
	wfs := map[string]bool{}
	for i, c := range got {
		if c.Order.UserID != in[i].UserID || c.Order.TotalCents != int64(i+1)*100 || c.Order.WorkflowID == nil || len(c.Outbox) != 1 {
			t.Fatalf("order %d = %+v, want the %dth order asked", i, c, i)
		}
		wfs[*c.Order.WorkflowID] = true
		v, err := workflow.Get(ctx, d, *c.Order.WorkflowID)
		if err != nil || len(v.Steps) != 2 || v.Steps[1].State != "waiting" || len(v.Steps[1].After) != 1 || v.Steps[0].TaskID != c.Outbox[0] {
			t.Fatalf("order %d workflow = %+v, %v", i, v, err)
		}
		var p tasks.OrderProcessPayload
		row, err := store.NewOutbox(d).Get(ctx, c.Outbox[0])
		if err != nil || json.Unmarshal(row.Payload, &p) != nil || p.OrderID != c.Order.ID || row.RequestID != in[i].RequestID {
			t.Fatalf("order %d outbox row = %+v (%v)", i, row, err)
		}
	}
	if len(wfs) != len(in) {
		t.Fatalf("%d workflows for %d orders", len(wfs), len(in))
	}

	in[4].UserID = users[2].ID + 1000
	if _, err := service.CreateOrders(ctx, d, in); !errors.Is(err, store.ErrMissingReference) {
		t.Fatalf("batch with a missing user: err = %v, want ErrMissingReference", err)
	}
	firstBatch := map[string]int{"orders": 6, "workflows": 6, "workflow_steps": 12, "workflow_edges": 6, "outbox": 6}
	for table, want := range firstBatch {
		var n int
		if err := d.GetContext(ctx, &n, `SELECT count(*) FROM `+table); err != nil || n != want {
			t.Fatalf("%s: %d rows (%v) after the failed batch; want %d, the first batch's", table, n, err, want)
		}
	}
}
