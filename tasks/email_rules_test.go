package tasks_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

// Mail with user-chosen text goes only to proven addresses. An account made
// with someone else's address gets that person a welcome email (no name)
// and order notices (no name, no items), at most UNVERIFIED_MAIL_MAX (3 by
// default) in a window, however many orders are placed, even at once. A
// verified customer's confirmations are never limited: each of 200 orders
// (far past any limit) gets its confirmation with its details.
func TestMailRulesUnverifiedLimitedVerifiedNever(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	items := []store.OrderItem{{SKU: "SPAM-LINK-http://evil.example", Quantity: 1, UnitPriceCents: 0}}

	victim := store.User{Email: "victim@example.com", Name: "Click http://evil.example now"}
	if err := b.users.Create(ctx, &victim); err != nil {
		t.Fatal(err)
	}
	if err := b.run(t, tasks.EmailWelcomePayload{UserID: victim.ID}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 10 {
		o, err := b.orders.Create(ctx, victim.ID, "EUR", items)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := b.run(t, tasks.EmailOrderConfirmationPayload{OrderID: o.ID}); err != nil {
				t.Errorf("order %d: %v", o.ID, err)
			}
		})
	}
	wg.Wait()

	customer := store.User{Email: "customer@example.com", Name: "Customer", EmailVerifiedAt: verifiedNow()}
	if err := b.users.Create(ctx, &customer); err != nil {
		t.Fatal(err)
	}
	const orders = 200
	for i := range orders {
		o, err := b.orders.Create(ctx, customer.ID, "EUR", []store.OrderItem{{SKU: "book-" + itoa(int64(i)), Quantity: 1, UnitPriceCents: 100}})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.run(t, tasks.EmailOrderConfirmationPayload{OrderID: o.ID}); err != nil {
			t.Fatal(err)
		}
	}

	var toVictim, toCustomer int
	for _, m := range b.mailer.sent {
		switch m.To {
		case victim.Email:
			toVictim++
			if all := m.Subject + m.Text + m.HTML; strings.Contains(all, "evil") || strings.Contains(all, "SPAM") {
				t.Fatalf("mail to an unproven address carries user-chosen text: %+v", m)
			}
		case customer.Email:
			toCustomer++
			if !strings.Contains(m.Subject, "confirmed") || !strings.Contains(m.Text, "Hello Customer") || !strings.Contains(m.Text, "book-") {
				t.Fatalf("a verified customer's confirmation lacks its details: %+v", m)
			}
		}
	}
	if toVictim != 3 {
		t.Fatalf("%d emails to the unproven address (welcome + 10 orders), want the limit of 3", toVictim)
	}
	if toCustomer != orders {
		t.Fatalf("%d confirmations for %d orders of a verified customer", toCustomer, orders)
	}

	// Once the victim proves the address, confirmations carry details
	// again (and the dropped ones are not sent late).
	if err := b.users.MarkEmailVerified(ctx, victim.ID, victim.Email); err != nil {
		t.Fatal(err)
	}
	o, _ := b.orders.Create(ctx, victim.ID, "EUR", []store.OrderItem{{SKU: "tea", Quantity: 1, UnitPriceCents: 300}})
	if err := b.run(t, tasks.EmailOrderConfirmationPayload{OrderID: o.ID}); err != nil {
		t.Fatal(err)
	}
	if last := b.mailer.sent[len(b.mailer.sent)-1]; last.To != victim.Email || !strings.Contains(last.Text, "tea") {
		t.Fatalf("after verification: %+v", last)
	}
}

// User-supplied text is bounded and escaped in every template, also for
// rows that did not come through the API's checks.
func TestUserTextBoundedAndEscapedInEmails(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	long := strings.Repeat("x", 500)
	u := store.User{Email: "h@example.com", Name: "<script>alert(1)</script>\u202eevil\nBcc: a@b.c", EmailVerifiedAt: verifiedNow()}
	if err := b.users.Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	o, err := b.orders.Create(ctx, u.ID, "EUR", []store.OrderItem{{SKU: long, Quantity: 1, UnitPriceCents: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.run(t, tasks.EmailOrderConfirmationPayload{OrderID: o.ID}); err != nil {
		t.Fatal(err)
	}
	m := b.mailer.sent[0]
	if strings.Contains(m.HTML, "<script>") || !strings.Contains(m.HTML, "&lt;script&gt;") {
		t.Fatalf("HTML not escaped: %s", m.HTML)
	}
	if strings.Contains(m.Text, "\u202e") || strings.Contains(m.Text, "\nBcc:") {
		t.Fatalf("control or format characters reached the text: %q", m.Text)
	}
	if strings.Contains(m.Text, strings.Repeat("x", 101)) || !strings.Contains(m.Text, strings.Repeat("x", 100)+"…") {
		t.Fatalf("an SKU of 500 characters is not cut to 100: %q", m.Text)
	}
}
