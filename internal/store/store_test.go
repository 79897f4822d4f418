package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
)

func TestUsersCreateGetConflict(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	users := store.NewUsers(testenv.Tx(t))

	u := store.User{Email: "Ada@Example.com", Name: "Ada"}
	if err := users.Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	if u.ID == 0 || u.Role != store.RoleUser {
		t.Fatalf("created user = %+v", u)
	}
	got, err := users.GetByEmail(ctx, "ada@example.com")
	if err != nil || got.ID != u.ID {
		t.Fatalf("GetByEmail = %+v, %v", got, err)
	}
	dup := store.User{Email: "ADA@example.com", Name: "Other"}
	if err := users.Create(ctx, &dup); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate email: err = %v, want ErrConflict", err)
	}
}

func TestUsersGetMissing(t *testing.T) {
	t.Parallel()
	_, err := store.NewUsers(testenv.Tx(t)).Get(context.Background(), 424242)
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func TestOrderTransitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testenv.Tx(t)
	u := store.User{Email: "o@example.com", Name: "O"}
	if err := store.NewUsers(tx).Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	orders := store.NewOrders(tx)
	o, err := orders.Create(ctx, u.ID, "EUR", []store.OrderItem{{SKU: "a", Quantity: 2, UnitPriceCents: 150}, {SKU: "b", Quantity: 1, UnitPriceCents: 99}})
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != store.OrderPending || o.TotalCents != 399 {
		t.Fatalf("created order = %+v", o)
	}

	steps := []struct {
		to          string
		from        []string
		wantStatus  string
		wantChanged bool
	}{
		{store.OrderProcessing, []string{store.OrderPending}, store.OrderProcessing, true},
		{store.OrderProcessing, []string{store.OrderPending}, store.OrderProcessing, false}, // idempotent
		{store.OrderCompleted, []string{store.OrderProcessing}, store.OrderCompleted, true},
		{store.OrderFailed, []string{store.OrderPending, store.OrderProcessing}, store.OrderCompleted, false},
	}
	for i, s := range steps {
		got, changed, err := orders.Transition(ctx, o.ID, s.to, s.from...)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got.Status != s.wantStatus || changed != s.wantChanged {
			t.Fatalf("step %d: status=%s changed=%v, want %s %v", i, got.Status, changed, s.wantStatus, s.wantChanged)
		}
	}
	final, _ := orders.Get(ctx, o.ID)
	if final.ProcessedAt == nil {
		t.Fatal("processed_at not set on completion")
	}
	if _, _, err := orders.Transition(ctx, 999999, store.OrderProcessing, store.OrderPending); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing order: err = %v", err)
	}
}

func TestEmailLogClaimOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := store.NewEmailLog(testenv.Tx(t))
	e := store.EmailEntry{DedupKey: "welcome:1", Recipient: "a@b.c", Template: "welcome", Subject: "hi"}

	claimed, _, err := log.Claim(ctx, e)
	if err != nil || !claimed {
		t.Fatalf("first claim = %v, %v", claimed, err)
	}
	claimed, existing, err := log.Claim(ctx, e)
	if err != nil || claimed || existing.Status != store.EmailSending {
		t.Fatalf("second claim = %v, %+v, %v", claimed, existing, err)
	}
	if err := log.Release(ctx, e.DedupKey); err != nil {
		t.Fatal(err)
	}
	if claimed, _, _ = log.Claim(ctx, e); !claimed {
		t.Fatal("claim after release must succeed")
	}
	if err := log.MarkSent(ctx, e.DedupKey); err != nil {
		t.Fatal(err)
	}
	if err := log.Release(ctx, e.DedupKey); err != nil {
		t.Fatal(err)
	}
	claimed, existing, _ = log.Claim(ctx, e)
	if claimed || existing.Status != store.EmailSent {
		t.Fatalf("a sent email must stay claimed: %v %+v", claimed, existing)
	}
}
