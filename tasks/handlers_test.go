package tasks_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/mail"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// recordingMailer collects messages and can fail on demand. It stands in for
// the SMTP server only here, in handler unit tests; SMTP itself is tested
// against a real server in internal/mail.
type recordingMailer struct {
	mu   sync.Mutex
	sent []mail.Message
	fail error
}

func (m *recordingMailer) Send(_ context.Context, msg mail.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.sent = append(m.sent, msg)
	return nil
}

type bundle struct {
	mux    *tasks.Mux
	mailer *recordingMailer
	users  *store.Users
	orders *store.Orders
	emails *store.EmailLog
}

func setup(t *testing.T) *bundle {
	t.Helper()
	d, _ := testenv.DB(t)
	tpl, err := mail.LoadTemplates()
	if err != nil {
		t.Fatal(err)
	}
	m := &recordingMailer{}
	return &bundle{
		mux:    tasks.NewMux(tasks.All(), tasks.Deps{DB: d, Mailer: m, Templates: tpl, Log: testenv.Logger(t)}, nil),
		mailer: m, users: store.NewUsers(d), orders: store.NewOrders(d), emails: store.NewEmailLog(d),
	}
}

func (b *bundle) run(t *testing.T, p tasks.Payload) error {
	t.Helper()
	task, err := tasks.New(p)
	if err != nil {
		t.Fatal(err)
	}
	return b.mux.ProcessTask(context.Background(), task)
}

func TestWelcomeEmailSentOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	u := store.User{Email: "grace@example.com", Name: "Grace"}
	if err := b.users.Create(context.Background(), &u); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ { // a retried or duplicated task
		if err := b.run(t, tasks.EmailWelcomePayload{UserID: u.ID}); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	if len(b.mailer.sent) != 1 {
		t.Fatalf("sent %d emails, want 1", len(b.mailer.sent))
	}
	msg := b.mailer.sent[0]
	if msg.To != "grace@example.com" || msg.Subject != "Welcome to Conveyor" || !strings.Contains(msg.HTML, "grace@example.com") {
		t.Fatalf("message = %+v", msg)
	}
	// The address is not proven yet: nothing the user chose (the name) is in
	// the email.
	if strings.Contains(msg.Text+msg.HTML+msg.Subject, "Grace") {
		t.Fatalf("the welcome email carries the user's name: %+v", msg)
	}
}

func TestEmailTemporaryFailureRetriesPermanentArchives(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	u := store.User{Email: "x@example.com", Name: "X", EmailVerifiedAt: verifiedNow()}
	if err := b.users.Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	o, err := b.orders.Create(ctx, u.ID, "USD", []store.OrderItem{{SKU: "s", Quantity: 1, UnitPriceCents: 500}})
	if err != nil {
		t.Fatal(err)
	}

	b.mailer.fail = errors.New("dial tcp: connection refused")
	err = b.run(t, tasks.EmailOrderConfirmationPayload{OrderID: o.ID})
	if err == nil || errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("temporary failure: err = %v, want a retryable error", err)
	}
	// The claim was released: the retry sends.
	b.mailer.fail = nil
	if err := b.run(t, tasks.EmailOrderConfirmationPayload{OrderID: o.ID}); err != nil {
		t.Fatal(err)
	}
	if len(b.mailer.sent) != 1 || !strings.Contains(b.mailer.sent[0].Text, "5.00 USD") {
		t.Fatalf("sent = %+v", b.mailer.sent)
	}

	// A permanent rejection archives and is recorded.
	o2, _ := b.orders.Create(ctx, u.ID, "USD", []store.OrderItem{{SKU: "s", Quantity: 1, UnitPriceCents: 1}})
	b.mailer.fail = &mail.PermanentError{Reply: "550 5.1.1 no such user"}
	err = b.run(t, tasks.EmailOrderConfirmationPayload{OrderID: o2.ID})
	if !errors.Is(err, asynq.SkipRetry) || !strings.Contains(err.Error(), "550") {
		t.Fatalf("permanent failure: err = %v", err)
	}
	e, _ := b.emails.Get(ctx, "order_confirmation:"+itoa(o2.ID))
	if e.Status != "failed" || !strings.Contains(e.Error, "550") {
		t.Fatalf("email_log = %+v", e)
	}
}

func TestEmailLeftSendingIsNotResent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	u := store.User{Email: "y@example.com", Name: "Y", EmailVerifiedAt: verifiedNow()}
	if err := b.users.Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	// An attempt that died mid-send leaves the claim behind.
	if _, _, err := b.emails.Claim(ctx, store.EmailEntry{DedupKey: "welcome:" + itoa(u.ID), Recipient: u.Email, Template: "welcome", Subject: "s"}); err != nil {
		t.Fatal(err)
	}
	err := b.run(t, tasks.EmailWelcomePayload{UserID: u.ID})
	if !errors.Is(err, asynq.SkipRetry) || len(b.mailer.sent) != 0 {
		t.Fatalf("err = %v, sent = %d; want archived and nothing sent", err, len(b.mailer.sent))
	}
}

// A send whose outcome is unknown (the server went silent after the whole
// message) keeps the claim and archives: the retry must not send again.
func TestEmailUncertainDeliveryIsNotRetried(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	u := store.User{Email: "w@example.com", Name: "W", EmailVerifiedAt: verifiedNow()}
	if err := b.users.Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	b.mailer.fail = &mail.UncertainError{Err: errors.New("read tcp: i/o timeout")}
	err := b.run(t, tasks.EmailWelcomePayload{UserID: u.ID})
	if !errors.Is(err, asynq.SkipRetry) || !strings.Contains(err.Error(), "uncertain") {
		t.Fatalf("err = %v, want archived with the reason", err)
	}
	if e, _ := b.emails.Get(ctx, "welcome:"+itoa(u.ID)); e.Status != store.EmailSending {
		t.Fatalf("email_log = %+v, want the claim kept (sending)", e)
	}
	b.mailer.fail = nil
	if err := b.run(t, tasks.EmailWelcomePayload{UserID: u.ID}); !errors.Is(err, asynq.SkipRetry) || len(b.mailer.sent) != 0 {
		t.Fatalf("run again: err = %v, sent = %d; want archived and nothing sent", err, len(b.mailer.sent))
	}
}

func TestOrderProcessRejectsInconsistentOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	u := store.User{Email: "z@example.com", Name: "Z", EmailVerifiedAt: verifiedNow()}
	if err := b.users.Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	o, err := b.orders.Create(ctx, u.ID, "EUR", nil) // no items
	if err != nil {
		t.Fatal(err)
	}
	err = b.run(t, tasks.OrderProcessPayload{OrderID: o.ID})
	if !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("err = %v, want permanent", err)
	}
	got, _ := b.orders.Get(ctx, o.ID)
	if got.Status != store.OrderFailed {
		t.Fatalf("status = %s, want failed", got.Status)
	}
}

// On the last attempt a timeout fails the order, but a cancelled context
// (worker shutdown, which puts the task back; an operator's cancel) leaves it
// processing, so the requeued task can still complete it.
func TestOrderProcessLastAttemptTimeoutFailsCancelDoesNot(t *testing.T) {
	t.Parallel()
	d, _ := testenv.DB(t)
	ctx := context.Background()
	users, orders := store.NewUsers(d), store.NewOrders(d)
	u := store.User{Email: "last@example.com", Name: "L", EmailVerifiedAt: verifiedNow()}
	if err := users.Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	slow := tasks.NewMux(tasks.All(), tasks.Deps{DB: d, Log: testenv.Logger(t), OrderProcessDelay: time.Hour}, nil)
	cases := []struct {
		name   string
		ctx    func() (context.Context, context.CancelFunc)
		want   error
		status string
	}{
		{"timeout", func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 200*time.Millisecond) },
			context.DeadlineExceeded, store.OrderFailed},
		{"cancelled", func() (context.Context, context.CancelFunc) {
			c, cancel := context.WithCancel(ctx)
			time.AfterFunc(200*time.Millisecond, cancel)
			return c, cancel
		}, context.Canceled, store.OrderProcessing},
	}
	for _, tc := range cases {
		o, err := orders.Create(ctx, u.ID, "EUR", []store.OrderItem{{SKU: "s", Quantity: 1, UnitPriceCents: 100}})
		if err != nil {
			t.Fatal(err)
		}
		task, err := tasks.New(tasks.OrderProcessPayload{OrderID: o.ID})
		if err != nil {
			t.Fatal(err)
		}
		// Outside a worker every attempt is the last one.
		c, cancel := tc.ctx()
		err = slow.ProcessTask(c, task)
		cancel()
		if !errors.Is(err, tc.want) {
			t.Fatalf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
		if got, _ := orders.Get(ctx, o.ID); got.Status != tc.status {
			t.Fatalf("%s: order status %s, want %s", tc.name, got.Status, tc.status)
		}
	}
}

func TestCleanupDeletesOnlyOldFinishedRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	u := store.User{Email: "c@example.com", Name: "C", EmailVerifiedAt: verifiedNow()}
	if err := b.users.Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	items := []store.OrderItem{{SKU: "s", Quantity: 1, UnitPriceCents: 1}}
	done, _ := b.orders.Create(ctx, u.ID, "EUR", items)
	pending, _ := b.orders.Create(ctx, u.ID, "EUR", items)
	finished, _, err := b.orders.Transition(ctx, done.ID, store.OrderCompleted, store.OrderPending)
	if err != nil {
		t.Fatal(err)
	}
	// max_age_hours is at least 24, so nothing fresh goes; the handler must
	// still report per-table counts.
	if err := b.run(t, tasks.MaintenanceCleanupPayload{MaxAgeHours: 24}); err != nil {
		t.Fatal(err)
	}
	// This worker's CLEANUP_MAX_AGE is 0 (below anything config allows): the
	// floor of 24 h still holds.
	if err := b.run(t, tasks.MaintenanceCleanupPayload{}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{done.ID, pending.ID} {
		if _, err := b.orders.Get(ctx, id); err != nil {
			t.Fatalf("fresh order %d deleted: %v", id, err)
		}
	}
	n, err := b.orders.DeleteFinishedBefore(ctx, finished.UpdatedAt.Add(time.Millisecond))
	if err != nil || n != 1 {
		t.Fatalf("DeleteFinishedBefore = %d, %v; want the completed order only", n, err)
	}
	if _, err := b.orders.Get(ctx, pending.ID); err != nil {
		t.Fatalf("pending order deleted: %v", err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// verifiedNow marks a fixture user's address as proven.
func verifiedNow() *time.Time {
	now := time.Now()
	return &now
}

// A failed order is never confirmed, even by a confirmation task enqueued by
// hand (the order workflow never enqueues one).
func TestFailedOrderGetsNoConfirmation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	u := store.User{Email: "f@example.com", Name: "F"}
	if err := b.users.Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	o, _ := b.orders.Create(ctx, u.ID, "EUR", []store.OrderItem{{SKU: "s", Quantity: 1, UnitPriceCents: 1}})
	if _, _, err := b.orders.Transition(ctx, o.ID, store.OrderFailed, store.OrderPending); err != nil {
		t.Fatal(err)
	}
	err := b.run(t, tasks.EmailOrderConfirmationPayload{OrderID: o.ID})
	if !errors.Is(err, asynq.SkipRetry) || len(b.mailer.sent) != 0 {
		t.Fatalf("err = %v, sent %d; want archived, nothing sent", err, len(b.mailer.sent))
	}
}
