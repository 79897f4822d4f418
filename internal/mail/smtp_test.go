package mail_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conveyor-run/conveyor/internal/mail"
	"github.com/conveyor-run/conveyor/internal/mail/mailtest"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

const from = "Conveyor <noreply@conveyor.test>"

func render(t *testing.T, name, to string, data any) mail.Message {
	t.Helper()
	tpl, err := mail.LoadTemplates()
	if err != nil {
		t.Fatal(err)
	}
	m, err := tpl.Render(name, to, data)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newSMTP(t *testing.T, url string) *mail.SMTP {
	t.Helper()
	s, err := mail.NewSMTP(url, from)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSMTPDeliversTextAndHTML(t *testing.T) {
	t.Parallel()
	srv := mailtest.Start(t)
	msg := render(t, mail.TemplateWelcome, "ada@example.com", welcomeData("ada@example.com"))
	if err := newSMTP(t, srv.URL()).Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	got := srv.To("ada@example.com")
	if len(got) != 1 {
		t.Fatalf("received %d messages for ada@example.com, want 1: %+v", len(got), srv.Messages())
	}
	m := got[0]
	if m.From != "noreply@conveyor.test" || m.Subject != "Welcome to Conveyor" {
		t.Fatalf("from=%q subject=%q", m.From, m.Subject)
	}
	if !strings.Contains(m.Text, "your account ada@example.com is ready") || !strings.Contains(m.HTML, "<strong>ada@example.com</strong>") {
		t.Fatalf("bodies:\ntext=%q\nhtml=%q", m.Text, m.HTML)
	}
}

func TestSMTPFailuresArePermanentOnlyFor5xx(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		code      int
		permanent bool
	}{
		{"550 mailbox unavailable", 550, true},
		{"553 bad address", 553, true},
		{"451 try later", 451, false},
		{"452 insufficient storage", 452, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := mailtest.Start(t)
			srv.Reject(func(string) *smtp.SMTPError {
				return &smtp.SMTPError{Code: tc.code, EnhancedCode: smtp.EnhancedCode{tc.code / 100, 1, 1}, Message: "refused by test"}
			})
			msg := render(t, mail.TemplateWelcome, "bob@example.com", welcomeData("bob@example.com"))
			err := newSMTP(t, srv.URL()).Send(context.Background(), msg)
			if err == nil {
				t.Fatal("send succeeded, want an error")
			}
			if mail.IsPermanent(err) != tc.permanent {
				t.Fatalf("IsPermanent(%v) = %v, want %v", err, !tc.permanent, tc.permanent)
			}
			if !strings.Contains(err.Error(), strconv.Itoa(tc.code)) {
				t.Fatalf("error %q does not carry the SMTP reply code %d", err, tc.code)
			}
			if n := len(srv.Messages()); n != 0 {
				t.Fatalf("server stored %d messages", n)
			}
		})
	}
}

func TestSMTPConnectionRefusedIsTemporary(t *testing.T) {
	t.Parallel()
	addr := testenv.FreeAddr(t) // nothing listens there
	msg := render(t, mail.TemplateWelcome, "c@example.com", welcomeData("c@example.com"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := newSMTP(t, "smtp://"+addr).Send(ctx, msg)
	if err == nil || mail.IsPermanent(err) {
		t.Fatalf("err = %v, want a temporary error", err)
	}
}

// orderFixture stores a user and an order and returns the order.
func orderFixture(t *testing.T, email string) (deps tasks.Deps, order store.Order) {
	t.Helper()
	ctx := context.Background()
	d, _ := testenv.DB(t)
	verified := time.Now()
	u := store.User{Email: email, Name: "Grace", EmailVerifiedAt: &verified}
	if err := store.NewUsers(d).Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	o, err := store.NewOrders(d).Create(ctx, u.ID, "EUR", []store.OrderItem{{SKU: "book", Quantity: 2, UnitPriceCents: 1250}})
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := mail.LoadTemplates()
	if err != nil {
		t.Fatal(err)
	}
	return tasks.Deps{DB: d, Templates: tpl, Log: testenv.Logger(t)}, o
}

func runConfirmation(t *testing.T, deps tasks.Deps, orderID int64) error {
	t.Helper()
	task, err := tasks.New(tasks.EmailOrderConfirmationPayload{OrderID: orderID})
	if err != nil {
		t.Fatal(err)
	}
	return tasks.NewMux(tasks.All(), deps, nil).ProcessTask(context.Background(), task)
}

// The order confirmation task, through the real SMTP mailer: the message
// names the order, and running the task again (a retry or a recovered task)
// sends nothing more.
func TestOrderConfirmationOverSMTPSendsOnce(t *testing.T) {
	t.Parallel()
	srv := mailtest.Start(t)
	deps, o := orderFixture(t, "grace@example.com")
	deps.Mailer = newSMTP(t, srv.URL())

	for range 2 {
		if err := runConfirmation(t, deps, o.ID); err != nil {
			t.Fatal(err)
		}
	}
	got := srv.To("grace@example.com")
	if len(got) != 1 {
		t.Fatalf("received %d confirmation emails, want exactly 1", len(got))
	}
	id := strconv.FormatInt(o.ID, 10)
	if got[0].Subject != "Order #"+id+" confirmed" || !strings.Contains(got[0].Text, "your order #"+id) ||
		!strings.Contains(got[0].Text, "Total: 25.00 EUR") {
		t.Fatalf("subject=%q text=%q", got[0].Subject, got[0].Text)
	}
	e, err := store.NewEmailLog(deps.DB).Get(context.Background(), "order_confirmation:"+id)
	if err != nil || e.Status != store.EmailSent {
		t.Fatalf("email_log = %+v, %v", e, err)
	}
}

// A 5xx reply archives the task (no retry) with the server's reply as the
// error and records the failure; a 4xx reply releases the claim so a retry
// can send.
func TestOrderConfirmationSMTPRejections(t *testing.T) {
	t.Parallel()
	t.Run("permanent", func(t *testing.T) {
		t.Parallel()
		srv := mailtest.Start(t)
		srv.Reject(func(string) *smtp.SMTPError {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user here"}
		})
		deps, o := orderFixture(t, "nobody@example.com")
		deps.Mailer = newSMTP(t, srv.URL())
		err := runConfirmation(t, deps, o.ID)
		if err == nil || !strings.Contains(err.Error(), "550") || !strings.Contains(err.Error(), "no such user here") ||
			!strings.Contains(err.Error(), "skip retry") {
			t.Fatalf("err = %v, want a skip-retry error carrying the 550 reply", err)
		}
		e, _ := store.NewEmailLog(deps.DB).Get(context.Background(), "order_confirmation:"+strconv.FormatInt(o.ID, 10))
		if e.Status != "failed" || !strings.Contains(e.Error, "550") {
			t.Fatalf("email_log = %+v", e)
		}
	})
	t.Run("temporary", func(t *testing.T) {
		t.Parallel()
		srv := mailtest.Start(t)
		srv.Reject(func(string) *smtp.SMTPError {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "greylisted"}
		})
		deps, o := orderFixture(t, "later@example.com")
		deps.Mailer = newSMTP(t, srv.URL())
		err := runConfirmation(t, deps, o.ID)
		if err == nil || strings.Contains(err.Error(), "skip retry") {
			t.Fatalf("err = %v, want a retryable error", err)
		}
		srv.Reject(nil) // the server recovers; the retry sends
		if err := runConfirmation(t, deps, o.ID); err != nil {
			t.Fatal(err)
		}
		if n := len(srv.To("later@example.com")); n != 1 {
			t.Fatalf("received %d emails after the retry, want 1", n)
		}
	})
}

// welcomeData is the welcome template's input.
func welcomeData(email string) any {
	return struct{ Email, VerifyURL string }{Email: email, VerifyURL: "https://conveyor.example/api/v1/auth/verify-email?token=t"}
}
