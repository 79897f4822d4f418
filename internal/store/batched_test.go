package store_test

import (
	"context"
	"slices"
	"testing"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
)

// The gathered statements mean, row by row, what their single-row versions
// mean: a missing order is absent, only orders in a from status move, and
// a key is claimed once however often it is named.
func TestOrdersManyMatchSingleRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testenv.Tx(t)
	u := store.User{Email: "many@example.com", Name: "Many"}
	if err := store.NewUsers(tx).Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	orders := store.NewOrders(tx)
	items := []store.OrderItem{{SKU: "a", Quantity: 1, UnitPriceCents: 100}}
	var ids []int64
	for range 3 {
		o, err := orders.Create(ctx, u.ID, "EUR", items)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, o.ID)
	}
	if _, _, err := orders.Transition(ctx, ids[2], store.OrderFailed, store.OrderPending); err != nil {
		t.Fatal(err)
	}
	const missing = 987654321

	got, err := orders.GetMany(ctx, append(slices.Clone(ids), missing))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[ids[0]].Status != store.OrderPending || got[ids[2]].Status != store.OrderFailed {
		t.Fatalf("GetMany = %+v; want the three orders, the missing one absent", got)
	}
	withCustomer, err := orders.GetManyWithCustomer(ctx, []int64{ids[1], missing})
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := withCustomer[ids[1]]; len(withCustomer) != 1 || !ok || c.User.Email != u.Email || c.Order.ID != ids[1] {
		t.Fatalf("GetManyWithCustomer = %+v", withCustomer)
	}

	moved, err := orders.TransitionMany(ctx, append(slices.Clone(ids), missing), store.OrderCompleted,
		store.OrderPending, store.OrderProcessing)
	if err != nil {
		t.Fatal(err)
	}
	if len(moved) != 2 || moved[ids[0]].Status != store.OrderCompleted || moved[ids[1]].ProcessedAt == nil {
		t.Fatalf("TransitionMany = %+v; want the two pending orders completed", moved)
	}
	if o, _ := orders.Get(ctx, ids[2]); o.Status != store.OrderFailed {
		t.Fatalf("failed order became %s", o.Status)
	}
	again, err := orders.TransitionMany(ctx, ids, store.OrderCompleted, store.OrderPending, store.OrderProcessing)
	if err != nil || len(again) != 0 {
		t.Fatalf("second TransitionMany = %+v, %v; want nothing moved", again, err)
	}
}

func TestEmailLogClaimManyOncePerKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := store.NewEmailLog(testenv.Tx(t))
	entry := func(key, to string) store.EmailEntry {
		return store.EmailEntry{DedupKey: key, Recipient: to, Template: "order_confirmation", Subject: "s"}
	}
	if claimed, _, err := log.Claim(ctx, entry("k:held", "a@example.com")); err != nil || !claimed {
		t.Fatalf("Claim = %v, %v", claimed, err)
	}
	got, err := log.ClaimMany(ctx, []store.EmailEntry{
		entry("k:1", "first@example.com"), entry("k:held", "b@example.com"), entry("k:1", "second@example.com"), entry("k:2", "c@example.com"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, false, false, true}; !slices.Equal(got, want) {
		t.Fatalf("ClaimMany = %v, want %v", got, want)
	}
	row, err := log.Get(ctx, "k:1")
	if err != nil || row.Recipient != "first@example.com" || row.Status != store.EmailSending {
		t.Fatalf("row of k:1 = %+v, %v; want the first claimant's, sending", row, err)
	}
	if err := log.MarkSentMany(ctx, []string{"k:1", "k:2", "k:none"}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"k:1", "k:2"} {
		if row, _ := log.Get(ctx, k); row.Status != store.EmailSent || row.SentAt == nil {
			t.Fatalf("%s after MarkSentMany = %+v", k, row)
		}
	}
	if row, _ := log.Get(ctx, "k:held"); row.Status != store.EmailSending {
		t.Fatalf("k:held = %s; MarkSentMany must touch only its keys", row.Status)
	}
}
