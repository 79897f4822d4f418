package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/mail/mailtest"
	"github.com/conveyor-run/conveyor/internal/testenv"
)

// The product flow through the real binaries: a user registers and gets a
// welcome email over SMTP, logs in, orders, and the order is processed and
// confirmed by exactly one email — also across idempotent retries, a worker
// crash and a Redis outage (outage_test.go).

// productEnv is a platform whose worker sends mail to an in-test SMTP server.
type productEnv struct {
	*testenv.Platform
	mail *mailtest.Server
}

func startProduct(t *testing.T, o testenv.PlatformOptions) *productEnv {
	t.Helper()
	m := mailtest.Start(t)
	o.Env = append([]string{"SMTP_URL=" + m.URL()}, o.Env...)
	return &productEnv{Platform: testenv.StartPlatform(t, o), mail: m}
}

type orderView struct {
	ID          int64      `json:"id"`
	UserID      int64      `json:"user_id"`
	Status      string     `json:"status"`
	TotalCents  int64      `json:"total_cents"`
	Currency    string     `json:"currency"`
	ProcessedAt *time.Time `json:"processed_at"`
	TaskIDs     []string   `json:"task_ids"`
}

// call sends a JSON request with optional bearer token and extra headers
// (pairs of name, value) and decodes a JSON answer into out.
func call(t *testing.T, method, url, token string, body any, out any, headers ...string) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
		return 0, nil, nil
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("%s %s: read: %v", method, url, err)
	}
	if out != nil && len(raw) > 0 && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Errorf("%s %s: decode %q: %v", method, url, raw, err)
		}
	}
	return resp.StatusCode, resp.Header, raw
}

// signUp registers a user, waits for the welcome email, follows its
// verification link (so the address is proven and order confirmations carry
// their details) and logs in; it returns the user's ID and access token.
func (e *productEnv) signUp(t *testing.T, email, name string) (int64, string) {
	t.Helper()
	const password = "correct horse battery"
	var u struct {
		ID    int64  `json:"id"`
		Email string `json:"email"`
		Role  string `json:"role"`
	}
	status, _, raw := call(t, http.MethodPost, e.APIURL+"/api/v1/auth/register", "",
		map[string]string{"email": email, "password": password, "name": name}, &u)
	if status != http.StatusCreated || u.ID == 0 || u.Email != email {
		t.Fatalf("register %s: %d %s", email, status, raw)
	}
	if !e.mail.Wait(30*time.Second, func([]mailtest.Message) bool { return len(withSubject(e.mail.To(email), welcomeSubject)) > 0 }) {
		t.Fatalf("no welcome email for %s within 30s; received: %v", email, subjects(e.mail.Messages()))
	}
	e.verify(t, withSubject(e.mail.To(email), welcomeSubject)[0])
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	status, _, raw = call(t, http.MethodPost, e.APIURL+"/api/v1/auth/login", "",
		map[string]string{"email": email, "password": password}, &tok)
	if status != http.StatusOK || tok.AccessToken == "" {
		t.Fatalf("login %s: %d %s", email, status, raw)
	}
	return u.ID, tok.AccessToken
}

// welcomeSubject is the welcome email's subject: it names no one, since
// the address is not proven when it is sent.
const welcomeSubject = "Welcome to Conveyor"

// verify follows the verification link of a welcome email on the api.
func (e *productEnv) verify(t *testing.T, welcome mailtest.Message) {
	t.Helper()
	_, query, ok := strings.Cut(welcome.Text, "/api/v1/auth/verify-email?")
	if !ok {
		t.Fatalf("the welcome email has no verification link:\n%s", welcome.Text)
	}
	query, _, _ = strings.Cut(query, "\n")
	if status, _, raw := call(t, http.MethodGet, e.APIURL+"/api/v1/auth/verify-email?"+strings.TrimSpace(query), "", nil, nil); status != http.StatusOK {
		t.Fatalf("verification link: %d %s", status, raw)
	}
}

// orderBody is a valid order of total 2·1250 + 1·499 = 2999 cents.
func orderBody() map[string]any {
	return map[string]any{"currency": "EUR", "items": []map[string]any{
		{"sku": "book", "quantity": 2, "unit_price_cents": 1250},
		{"sku": "pen", "quantity": 1, "unit_price_cents": 499},
	}}
}

// createOrder posts orderBody and requires 201.
func (e *productEnv) createOrder(t *testing.T, token string, headers ...string) orderView {
	t.Helper()
	var o orderView
	status, _, raw := call(t, http.MethodPost, e.APIURL+"/api/v1/orders", token, orderBody(), &o, headers...)
	if status != http.StatusCreated {
		t.Fatalf("create order: %d %s", status, raw)
	}
	if o.Status != "pending" || o.TotalCents != 2999 || len(o.TaskIDs) != 2 {
		t.Fatalf("created order = %+v", o)
	}
	return o
}

func (e *productEnv) order(t *testing.T, token string, id int64) orderView {
	t.Helper()
	var o orderView
	status, _, raw := call(t, http.MethodGet, fmt.Sprintf("%s/api/v1/orders/%d", e.APIURL, id), token, nil, &o)
	if status != http.StatusOK {
		t.Fatalf("get order %d: %d %s", id, status, raw)
	}
	return o
}

// waitCompleted waits until every order is completed and every task it
// triggered (order:process, email:order_confirmation) has completed too, so
// that counting emails afterwards is final. It fails on a failed order.
func (e *productEnv) waitCompleted(t *testing.T, token string, orders []orderView, timeout time.Duration) {
	t.Helper()
	var last orderView
	testenv.Eventually(t, timeout, func() bool {
		for _, o := range orders {
			last = e.order(t, token, o.ID)
			if last.Status == "failed" {
				t.Fatalf("order %d failed", o.ID)
			}
			if last.Status != "completed" || last.ProcessedAt == nil {
				return false
			}
			for _, id := range o.TaskIDs {
				if v := e.task(t, id); v.State != "completed" {
					return false
				}
			}
		}
		return true
	}, "orders not all completed with their tasks (last seen %+v)", &last)
}

// task is GET /api/v1/tasks/{id}; a task not yet relayed reads as state "".
func (e *productEnv) task(t *testing.T, id string) taskView {
	t.Helper()
	var v taskView
	status, raw := e.Do(http.MethodGet, "/api/v1/tasks/"+id, nil, &v)
	switch status {
	case http.StatusOK:
		return v
	case http.StatusNotFound:
		return taskView{ID: id}
	}
	t.Fatalf("get task %s: %d %s", id, status, raw)
	return v
}

// confirmations counts, per order, the confirmation emails sent to rcpt.
func (e *productEnv) confirmations(rcpt string, orders []orderView) (perOrder map[int64]int, total int) {
	perOrder = map[int64]int{}
	msgs := e.mail.To(rcpt)
	for _, o := range orders {
		n := len(withSubject(msgs, fmt.Sprintf("Order #%d confirmed", o.ID)))
		perOrder[o.ID] = n
		total += n
	}
	return perOrder, total
}

// requireOneConfirmationEach fails unless each order got exactly one
// confirmation email.
func (e *productEnv) requireOneConfirmationEach(t *testing.T, rcpt string, orders []orderView) int {
	t.Helper()
	perOrder, total := e.confirmations(rcpt, orders)
	for id, n := range perOrder {
		if n != 1 {
			t.Errorf("order %d: %d confirmation emails, want exactly 1", id, n)
		}
	}
	return total
}

func withSubject(msgs []mailtest.Message, subject string) []mailtest.Message {
	var out []mailtest.Message
	for _, m := range msgs {
		if m.Subject == subject {
			out = append(out, m)
		}
	}
	return out
}

func subjects(msgs []mailtest.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = fmt.Sprintf("%v: %s", m.To, m.Subject)
	}
	return out
}

// TestProductFlow: register → welcome email over SMTP; login; /users/me;
// create an order → it completes and exactly one confirmation email arrives,
// with the order's content.
func TestProductFlow(t *testing.T) {
	t.Parallel()
	e := startProduct(t, testenv.PlatformOptions{})
	const email = "ada@example.com"
	userID, token := e.signUp(t, email, "Ada")

	// Registering the same email again is a conflict and sends nothing.
	status, _, raw := call(t, http.MethodPost, e.APIURL+"/api/v1/auth/register", "",
		map[string]string{"email": email, "password": "another password", "name": "Eve"}, nil)
	if status != http.StatusConflict {
		t.Errorf("second registration: %d %s", status, raw)
	}
	// A wrong password is refused.
	if status, _, raw := call(t, http.MethodPost, e.APIURL+"/api/v1/auth/login", "",
		map[string]string{"email": email, "password": "wrong password"}, nil); status != http.StatusUnauthorized {
		t.Errorf("login with a wrong password: %d %s", status, raw)
	}
	var me struct {
		ID    int64  `json:"id"`
		Email string `json:"email"`
	}
	if status, _, raw := call(t, http.MethodGet, e.APIURL+"/api/v1/users/me", token, nil, &me); status != http.StatusOK || me.ID != userID || me.Email != email {
		t.Fatalf("/users/me: %d %s", status, raw)
	}

	o := e.createOrder(t, token)
	if o.UserID != userID {
		t.Errorf("order belongs to user %d, want %d", o.UserID, userID)
	}
	e.waitCompleted(t, token, []orderView{o}, 60*time.Second)
	emails := e.requireOneConfirmationEach(t, email, []orderView{o})
	conf := withSubject(e.mail.To(email), fmt.Sprintf("Order #%d confirmed", o.ID))
	if len(conf) == 1 && (!strings.Contains(conf[0].Text, "book") || !strings.Contains(conf[0].Text, "29.99")) {
		t.Errorf("confirmation text does not show the order:\n%s", conf[0].Text)
	}
	welcomes := len(withSubject(e.mail.To(email), welcomeSubject))
	if welcomes != 1 || len(e.mail.Messages()) != 2 {
		t.Errorf("mailbox: %d welcome emails, %d messages in all, want 1 and 2: %v", welcomes, len(e.mail.Messages()), subjects(e.mail.Messages()))
	}
	t.Logf("product flow: 1 user registered (201), %d welcome email; login 200; 1 order created (201), 1 completed, %d confirmation email; %d messages at the SMTP server",
		welcomes, emails, len(e.mail.Messages()))
}

// TestOrderIdempotencyKey: the same Idempotency-Key twice (and then five
// times at once) gives one order, one processing and one email; the same key
// with another body is refused.
func TestOrderIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := startProduct(t, testenv.PlatformOptions{})
	const email = "grace@example.com"
	_, token := e.signUp(t, email, "Grace")

	first := e.createOrder(t, token, "Idempotency-Key", "order-42")
	var second orderView
	status, hdr, raw := call(t, http.MethodPost, e.APIURL+"/api/v1/orders", token, orderBody(), &second, "Idempotency-Key", "order-42")
	if status != http.StatusCreated || second.ID != first.ID || hdr.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d (Idempotent-Replayed=%q) %s; first order %d", status, hdr.Get("Idempotent-Replayed"), raw, first.ID)
	}
	if strings.Join(second.TaskIDs, ",") != strings.Join(first.TaskIDs, ",") {
		t.Errorf("replay names tasks %v, first answer %v", second.TaskIDs, first.TaskIDs)
	}
	// Same key, different request: refused, nothing created.
	other := orderBody()
	other["currency"] = "USD"
	if status, _, raw := call(t, http.MethodPost, e.APIURL+"/api/v1/orders", token, other, nil, "Idempotency-Key", "order-42"); status != http.StatusUnprocessableEntity {
		t.Errorf("same key, other body: %d %s", status, raw)
	}

	// Five concurrent requests with a fresh key: one order; the others get
	// its response or 409 (still in progress), never a second order.
	const racers = 5
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
		ids      = map[int64]bool{}
	)
	for range racers {
		wg.Go(func() {
			var o orderView
			status, _, _ := call(t, http.MethodPost, e.APIURL+"/api/v1/orders", token, orderBody(), &o, "Idempotency-Key", "order-43")
			mu.Lock()
			defer mu.Unlock()
			statuses[status]++
			if status == http.StatusCreated {
				ids[o.ID] = true
			}
		})
	}
	wg.Wait()
	if statuses[http.StatusCreated] == 0 || len(ids) != 1 || statuses[http.StatusCreated]+statuses[http.StatusConflict] != racers {
		t.Fatalf("%d concurrent requests with one key: statuses %v, order IDs %v", racers, statuses, ids)
	}
	var raced orderView
	for id := range ids {
		raced = e.order(t, token, id)
	}
	raced.TaskIDs = nil // GET does not name tasks; the replayed POST does:
	if status, _, raw := call(t, http.MethodPost, e.APIURL+"/api/v1/orders", token, orderBody(), &raced, "Idempotency-Key", "order-43"); status != http.StatusCreated || len(raced.TaskIDs) != 2 {
		t.Fatalf("replay of the raced key: %d %s", status, raw)
	}

	var list struct {
		Data  []orderView `json:"data"`
		Total int64       `json:"total"`
	}
	if status, _, raw := call(t, http.MethodGet, e.APIURL+"/api/v1/orders", token, nil, &list); status != http.StatusOK || list.Total != 2 {
		t.Fatalf("orders after 2+1+%d requests with 2 keys: %d %s", racers+1, status, raw)
	}
	orders := []orderView{first, raced}
	e.waitCompleted(t, token, orders, 60*time.Second)
	emails := e.requireOneConfirmationEach(t, email, orders)
	t.Logf("idempotency: key A sent 2 times (201, 201 replayed) + once with another body (422); key B sent %d times at once (statuses %v) + once more; %d orders exist, %d completed, %d confirmation emails",
		racers, statuses, list.Total, len(orders), emails)
}

// TestOrderSurvivesWorkerSIGKILL: the worker is killed with SIGKILL while
// inside order:process (ORDER_PROCESS_DELAY holds it there); after a restart
// the new worker's reaper recovers the task about WORKER_DEAD_AFTER (10 s)
// after the kill (queue.Liveness; asynq alone would take 70-170 s), every
// order completes and each still has exactly one confirmation email.
func TestOrderSurvivesWorkerSIGKILL(t *testing.T) {
	t.Parallel()
	e := startProduct(t, testenv.PlatformOptions{NoWorker: true})
	worker, _ := e.StartWorker("ORDER_PROCESS_DELAY=10m")
	const email = "linus@example.com"
	_, token := e.signUp(t, email, "Linus")

	const n = 3
	var orders []orderView
	for range n {
		orders = append(orders, e.createOrder(t, token))
	}
	// Kill when every order is mid-processing. Its confirmation email is a
	// later step of the order's workflow: not enqueued yet.
	testenv.Eventually(t, 60*time.Second, func() bool {
		for _, o := range orders {
			if e.order(t, token, o.ID).Status != "processing" || e.task(t, o.TaskIDs[0]).State != "active" {
				return false
			}
		}
		return true
	}, "orders never all inside order:process")
	for _, o := range orders {
		if st := e.task(t, o.TaskIDs[1]).State; st != "" {
			t.Fatalf("order %d's confirmation is %q while order:process runs, want not enqueued", o.ID, st)
		}
	}
	_, before := e.confirmations(email, orders)
	worker.Kill()
	killed := time.Now()
	for _, o := range orders {
		if s := e.order(t, token, o.ID).Status; s != "processing" {
			t.Fatalf("order %d is %s right after the kill, want processing", o.ID, s)
		}
	}

	e.StartWorker("ORDER_PROCESS_DELAY=0s")
	e.waitCompleted(t, token, orders, 180*time.Second)
	recovered := time.Since(killed)
	var lastErr string
	for _, o := range orders {
		v := e.task(t, o.TaskIDs[0])
		if v.Retried < 1 {
			t.Errorf("order:process %s completed with retried=%d: it was not recovered from the killed worker (%+v)", v.ID, v.Retried, v)
		}
		lastErr = v.LastError
	}
	emails := e.requireOneConfirmationEach(t, email, orders)
	t.Logf("worker SIGKILL: %d orders created (201), %d in order:process at the kill (%d confirmation emails already sent), %d completed %s after the kill (recovered task's last error %q), %d confirmation emails in all",
		n, n, before, n, recovered.Round(time.Second), lastErr, emails)
}
