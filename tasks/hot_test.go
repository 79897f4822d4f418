package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

// Many orders processed and confirmed at once share their statements
// (tasks/hot.go); each order still ends completed with exactly one email,
// even when every task is delivered twice at the same time, and an order
// that cannot complete still fails alone.
func TestConcurrentOrdersEachCompletedAndConfirmedOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	u := store.User{Email: "many@example.com", Name: "Many", EmailVerifiedAt: verifiedNow()}
	if err := b.users.Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	const n = 40
	items := []store.OrderItem{{SKU: "s", Quantity: 2, UnitPriceCents: 150}}
	ids := make([]int64, n)
	for i := range ids {
		o, err := b.orders.Create(ctx, u.ID, "EUR", items)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = o.ID
	}
	broken, err := b.orders.Create(ctx, u.ID, "EUR", nil) // no items: fails
	if err != nil {
		t.Fatal(err)
	}

	runAll := func(payload func(id int64) tasks.Payload, ids []int64) []error {
		errs := make([]error, 2*len(ids))
		var wg sync.WaitGroup
		for i, id := range ids {
			for j := range 2 { // each task delivered twice
				wg.Go(func() { errs[2*i+j] = b.run(t, payload(id)) })
			}
		}
		wg.Wait()
		return errs
	}
	process := func(id int64) tasks.Payload { return tasks.OrderProcessPayload{OrderID: id} }
	permanent := 0
	for i, err := range runAll(process, append(ids, broken.ID)) {
		if i/2 == n {
			// The delivery that fails the order is permanent; a second one
			// that reads the order failed already is done (nil).
			switch {
			case errors.Is(err, asynq.SkipRetry):
				permanent++
			case err != nil:
				t.Fatalf("order without items: err = %v, want permanent or done", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("order:process of order %d: %v", ids[i/2], err)
		}
	}
	if permanent == 0 {
		t.Fatal("order without items: no delivery failed permanently")
	}
	for _, id := range ids {
		if o, _ := b.orders.Get(ctx, id); o.Status != store.OrderCompleted || o.ProcessedAt == nil {
			t.Fatalf("order %d = %s; want completed", id, o.Status)
		}
	}
	if o, _ := b.orders.Get(ctx, broken.ID); o.Status != store.OrderFailed {
		t.Fatalf("order without items = %s; want failed", o.Status)
	}

	confirm := func(id int64) tasks.Payload { return tasks.EmailOrderConfirmationPayload{OrderID: id} }
	for i, err := range runAll(confirm, ids) {
		// The second of two simultaneous deliveries either finds the email
		// sent (nil) or still being sent by the first: then it stops
		// without sending (permanent), as a duplicate always has.
		if err != nil && !(errors.Is(err, asynq.SkipRetry) && strings.Contains(err.Error(), "not resending")) {
			t.Fatalf("confirmation of order %d: %v", ids[i/2], err)
		}
	}
	perOrder := map[string]int{}
	b.mailer.mu.Lock()
	for _, m := range b.mailer.sent {
		perOrder[m.Subject]++
	}
	sent := len(b.mailer.sent)
	b.mailer.mu.Unlock()
	if sent != n || len(perOrder) != n {
		t.Fatalf("%d emails for %d distinct subjects; want one per order (%d)", sent, len(perOrder), n)
	}
	for _, id := range ids {
		e, err := b.emails.Get(ctx, fmt.Sprintf("order_confirmation:%d", id))
		if err != nil || e.Status != store.EmailSent {
			t.Fatalf("email_log of order %d = %+v, %v; want sent", id, e, err)
		}
	}
}
