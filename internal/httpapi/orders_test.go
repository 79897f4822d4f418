package httpapi_test

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
)

type orderJSON struct {
	ID         int64    `json:"id"`
	UserID     int64    `json:"user_id"`
	Status     string   `json:"status"`
	TotalCents int64    `json:"total_cents"`
	Currency   string   `json:"currency"`
	TaskIDs    []string `json:"task_ids"`
	WorkflowID *string  `json:"workflow_id"`
}

func anOrder() map[string]any {
	return map[string]any{"currency": "EUR", "items": []map[string]any{
		{"sku": "book", "quantity": 2, "unit_price_cents": 1250},
		{"sku": "pen", "quantity": 1, "unit_price_cents": 99},
	}}
}

func TestOrderCreateWritesOrderAndOutboxTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupProduct(t, "")
	u, authz := b.register(t, "buyer@example.com")
	var o orderJSON
	rec := b.call(t, "POST", "/api/v1/orders", authz, anOrder(), &o)
	if rec.Code != http.StatusCreated || o.Status != "pending" || o.TotalCents != 2599 || o.UserID != u.ID || len(o.TaskIDs) != 2 {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	// Relay the outbox (the api process does this continuously) and find
	// the tasks under the IDs the response promised.
	relay := queue.NewRelay(b.db, b.q, testenv.Logger(t), queue.RelayOptions{})
	if _, _, err := relay.RelayOnce(ctx); err != nil {
		t.Fatal(err)
	}
	// The order's workflow runs order:process first; the confirmation's
	// task ID is known but it is enqueued only once processing succeeded.
	var task struct {
		Type string `json:"type"`
	}
	if rec := b.call(t, "GET", "/api/v1/tasks/"+o.TaskIDs[0], "Bearer "+token, nil, &task); rec.Code != http.StatusOK || task.Type != "order:process" {
		t.Fatalf("task %s: %d %s", o.TaskIDs[0], rec.Code, rec.Body)
	}
	if rec := b.call(t, "GET", "/api/v1/tasks/"+o.TaskIDs[1], "Bearer "+token, nil, nil); rec.Code != http.StatusNotFound {
		t.Fatalf("confirmation enqueued before processing: %d %s", rec.Code, rec.Body)
	}
	var wf workflowJSON
	if o.WorkflowID == nil {
		t.Fatalf("order names no workflow: %+v", o)
	}
	if rec := b.call(t, "GET", "/api/v1/workflows/"+*o.WorkflowID, "Bearer "+token, nil, &wf); rec.Code != http.StatusOK ||
		len(wf.Steps) != 2 || wf.Steps[1].Type != "email:order_confirmation" || wf.Steps[1].TaskID != o.TaskIDs[1] ||
		wf.Steps[1].State != "waiting" {
		t.Fatalf("order workflow: %d %s", rec.Code, rec.Body)
	}
	var got orderJSON
	if rec := b.call(t, "GET", "/api/v1/orders/"+itoa(o.ID), authz, nil, &got); rec.Code != http.StatusOK || got.ID != o.ID ||
		got.WorkflowID == nil || *got.WorkflowID != *o.WorkflowID {
		t.Fatalf("get own order: %d %s", rec.Code, rec.Body)
	}
}

func TestOrderCreateValidation(t *testing.T) {
	t.Parallel()
	b := setupProduct(t, "")
	_, authz := b.register(t, "v@example.com")
	cases := []struct {
		name  string
		body  any
		field string
	}{
		{"no items", map[string]any{"currency": "EUR", "items": []any{}}, "items"},
		{"missing items", map[string]any{"currency": "EUR"}, "items"},
		{"quantity 0", map[string]any{"currency": "EUR", "items": []map[string]any{{"sku": "a", "quantity": 0, "unit_price_cents": 1}}}, "items[0].quantity"},
		{"negative price", map[string]any{"currency": "EUR", "items": []map[string]any{{"sku": "a", "quantity": 1, "unit_price_cents": -5}}}, "items[0].unit_price_cents"},
		{"missing price", map[string]any{"currency": "EUR", "items": []map[string]any{{"sku": "a", "quantity": 1}}}, "items[0].unit_price_cents"},
		{"blank sku", map[string]any{"currency": "EUR", "items": []map[string]any{{"sku": " ", "quantity": 1, "unit_price_cents": 1}}}, "items[0].sku"},
		{"currency not ISO", map[string]any{"currency": "EURO", "items": []map[string]any{{"sku": "a", "quantity": 1, "unit_price_cents": 1}}}, "currency"},
		{"currency unknown", map[string]any{"currency": "XYZ", "items": []map[string]any{{"sku": "a", "quantity": 1, "unit_price_cents": 1}}}, "currency"},
		{"quantity as string", `{"currency":"EUR","items":[{"sku":"a","quantity":"2","unit_price_cents":1}]}`, "items.quantity"},
		{"unknown field", `{"currency":"EUR","items":[],"coupon":"X"}`, "coupon"},
	}
	for _, tc := range cases {
		var e errorBody
		rec := b.call(t, "POST", "/api/v1/orders", authz, tc.body, &e)
		if rec.Code != http.StatusUnprocessableEntity || e.Error.Fields[tc.field] == "" {
			t.Errorf("%s: %d %s; want 422 naming %q", tc.name, rec.Code, rec.Body, tc.field)
		}
	}
	orders, total, _ := store.NewOrders(b.db).List(context.Background(), 0, store.Page{Limit: 10})
	if total != 0 || len(orders) != 0 {
		t.Fatalf("invalid requests wrote %d orders", total)
	}
	if st, _ := store.NewOutbox(b.db).Stats(context.Background()); st.Pending != 1 { // the welcome email only
		t.Fatalf("invalid requests wrote outbox rows: %+v", st)
	}
}

func TestOrderIdempotencyKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupProduct(t, "")
	u, authz := b.register(t, "idem@example.com")
	_, other := b.register(t, "other@example.com")

	var first, again orderJSON
	rec := b.call(t, "POST", "/api/v1/orders", authz, anOrder(), &first, "Idempotency-Key", "order-1")
	if rec.Code != http.StatusCreated {
		t.Fatalf("first: %d %s", rec.Code, rec.Body)
	}
	rec = b.call(t, "POST", "/api/v1/orders", authz, anOrder(), &again, "Idempotency-Key", "order-1")
	if rec.Code != http.StatusCreated || again.ID != first.ID || rec.Header().Get("Idempotent-Replayed") != "true" ||
		len(again.TaskIDs) != 2 || again.TaskIDs[0] != first.TaskIDs[0] {
		t.Fatalf("replay: %d %s (first %+v)", rec.Code, rec.Body, first)
	}
	changed := anOrder()
	changed["currency"] = "USD"
	var e errorBody
	if rec := b.call(t, "POST", "/api/v1/orders", authz, changed, &e, "Idempotency-Key", "order-1"); rec.Code != http.StatusUnprocessableEntity ||
		e.Error.Code != "idempotency_key_reused" {
		t.Fatalf("same key, other body: %d %s", rec.Code, rec.Body)
	}
	// Keys are per caller: another user's "order-1" is a new order.
	var theirs orderJSON
	if rec := b.call(t, "POST", "/api/v1/orders", other, anOrder(), &theirs, "Idempotency-Key", "order-1"); rec.Code != http.StatusCreated || theirs.ID == first.ID {
		t.Fatalf("other user's key: %d %s", rec.Code, rec.Body)
	}

	// Concurrent retries with one key create one order.
	const n = 8
	ids := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var o orderJSON
			rec := b.call(t, "POST", "/api/v1/orders", authz, anOrder(), &o, "Idempotency-Key", "burst")
			if rec.Code != http.StatusCreated {
				t.Errorf("burst %d: %d %s", i, rec.Code, rec.Body)
			}
			ids[i] = o.ID
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("concurrent requests with one key created different orders: %v", ids)
		}
	}
	_, total, err := store.NewOrders(b.db).List(ctx, u.ID, store.Page{Limit: 100})
	if err != nil || total != 2 {
		t.Fatalf("user has %d orders, want 2 (order-1 and burst): %v", total, err)
	}
	if st, _ := store.NewOutbox(b.db).Stats(ctx); st.Pending != 2+3 { // 2 welcomes + 3 orders' order:process (confirmations wait for it)
		t.Fatalf("outbox rows = %+v", st)
	}
}

func TestTaskIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := setupProduct(t, "")
	key := b.apiKey(t, "svc")
	body := map[string]any{"type": "system:ping", "payload": map[string]any{}}
	var first, again struct {
		ID string `json:"id"`
	}
	if rec := b.call(t, "POST", "/api/v1/tasks", key, body, &first, "Idempotency-Key", "ping-1"); rec.Code != http.StatusAccepted {
		t.Fatalf("first: %d %s", rec.Code, rec.Body)
	}
	rec := b.call(t, "POST", "/api/v1/tasks", key, body, &again, "Idempotency-Key", "ping-1")
	if rec.Code != http.StatusAccepted || again.ID != first.ID || rec.Header().Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %s, first id %s", rec.Code, rec.Body, first.ID)
	}
	if rec := b.call(t, "POST", "/api/v1/tasks", key, map[string]any{"type": "system:ping", "queue": "low"}, nil, "Idempotency-Key", "ping-1"); rec.Code != http.StatusUnprocessableEntity {
		t.Fatalf("same key, other body: %d %s", rec.Code, rec.Body)
	}
	// A failed request does not burn its key.
	if rec := b.call(t, "POST", "/api/v1/tasks", key, map[string]any{"type": "nope"}, nil, "Idempotency-Key", "ping-2"); rec.Code != http.StatusUnprocessableEntity {
		t.Fatalf("bad type: %d", rec.Code)
	}
	var third struct {
		ID string `json:"id"`
	}
	if rec := b.call(t, "POST", "/api/v1/tasks", key, map[string]any{"type": "nope"}, nil, "Idempotency-Key", "ping-2"); rec.Code != http.StatusUnprocessableEntity {
		t.Fatalf("bad type again: %d", rec.Code)
	}
	if rec := b.call(t, "POST", "/api/v1/tasks", key, body, &third, "Idempotency-Key", "ping-3"); rec.Code != http.StatusAccepted || third.ID == first.ID {
		t.Fatalf("new key: %d %s", rec.Code, rec.Body)
	}
}

// While Redis is down orders are still accepted: their tasks wait in the
// outbox, which GET /api/v1/queues reports.
func TestOrdersAcceptedWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	b := setupProduct(t, "redis://"+testenv.FreeAddr(t)+"/0")
	_, authz := b.register(t, "storm@example.com")
	for range 3 {
		if rec := b.call(t, "POST", "/api/v1/orders", authz, anOrder(), nil); rec.Code != http.StatusCreated {
			t.Fatalf("order while Redis is down: %d %s", rec.Code, rec.Body)
		}
	}
	var out struct {
		OutboxPending int64 `json:"outbox_pending"`
		Queues        []any `json:"queues"`
		Error         struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	rec := b.call(t, "GET", "/api/v1/queues", "Bearer "+token, nil, &out)
	if rec.Code != http.StatusServiceUnavailable || out.OutboxPending != 1+3 || out.Error.Code != "redis_unavailable" || out.Queues == nil {
		t.Fatalf("queues while Redis is down: %d %s", rec.Code, rec.Body)
	}
}

// A token outlives its user only as a 401: on routes that read the user
// (GET /users/me) and on POST /orders, which does not (its insert checks
// the user), where nothing is written. A service key still may not order.
func TestDeletedUsersTokenIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupProduct(t, "")
	u, authz := b.register(t, "gone@example.com")
	if rec := b.call(t, "POST", "/api/v1/orders", authz, anOrder(), nil); rec.Code != http.StatusCreated {
		t.Fatalf("order while the user exists: %d %s", rec.Code, rec.Body)
	}
	if _, err := b.db.ExecContext(ctx, `DELETE FROM users WHERE id = $1`, u.ID); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ method, path string }{{"GET", "/api/v1/users/me"}, {"POST", "/api/v1/orders"}} {
		var e errorBody
		var body any
		if r.method == "POST" {
			body = anOrder()
		}
		rec := b.call(t, r.method, r.path, authz, body, &e)
		if rec.Code != http.StatusUnauthorized || e.Error.Message != "the token's user no longer exists" {
			t.Errorf("%s %s with a deleted user's token: %d %s", r.method, r.path, rec.Code, rec.Body)
		}
	}
	var orders int
	if err := b.db.GetContext(ctx, &orders, `SELECT count(*) FROM orders`); err != nil || orders != 0 {
		t.Errorf("orders after the user's deletion: %d (%v); want 0 (the first went with its user)", orders, err)
	}
	if rec := b.call(t, "POST", "/api/v1/orders", "Bearer "+token, anOrder(), nil); rec.Code != http.StatusForbidden {
		t.Errorf("order with API_TOKEN: %d %s; want 403", rec.Code, rec.Body)
	}
}

// Concurrent orders are gathered into shared statements: each request
// still gets its own order, with its own workflow and first task, and a
// deleted user's request in the mix fails alone (its statement is run
// again order by order) while the others commit.
func TestConcurrentOrdersEachGetTheirOwn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupProduct(t, "")
	var users [3]userJSON
	var tokens [3]string
	for i := range users {
		users[i], tokens[i] = b.register(t, "conc"+itoa(int64(i))+"@example.com")
	}
	gone, goneToken := b.register(t, "gone-conc@example.com")
	if _, err := b.db.ExecContext(ctx, `DELETE FROM users WHERE id = $1`, gone.ID); err != nil {
		t.Fatal(err)
	}
	const n = 40
	got := make([]orderJSON, n)
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		authz := tokens[i%3]
		if i%10 == 9 {
			authz = goneToken
		}
		wg.Go(func() { codes[i] = b.call(t, "POST", "/api/v1/orders", authz, anOrder(), &got[i]).Code })
	}
	wg.Wait()
	seen := map[int64]bool{}
	for i := range n {
		if i%10 == 9 {
			if codes[i] != http.StatusUnauthorized {
				t.Errorf("request %d, deleted user: %d; want 401", i, codes[i])
			}
			continue
		}
		o := got[i]
		if codes[i] != http.StatusCreated || o.UserID != users[i%3].ID || seen[o.ID] || o.WorkflowID == nil || len(o.TaskIDs) != 2 {
			t.Fatalf("request %d: %d %+v", i, codes[i], o)
		}
		seen[o.ID] = true
		row, err := store.NewOutbox(b.db).Get(ctx, o.TaskIDs[0])
		if err != nil || row.TaskType != "order:process" {
			t.Fatalf("order %d: outbox row %+v, %v", o.ID, row, err)
		}
	}
	var orders, workflows, statements int
	if err := b.db.GetContext(ctx, &orders, `SELECT count(*) FROM orders`); err != nil || orders != len(seen) {
		t.Fatalf("%d orders stored (%v); want %d", orders, err, len(seen))
	}
	if err := b.db.GetContext(ctx, &workflows, `SELECT count(*) FROM workflows`); err != nil || workflows != len(seen) {
		t.Fatalf("%d workflows stored (%v); want %d", workflows, err, len(seen))
	}
	// Orders of one statement share its transaction's timestamp.
	_ = b.db.GetContext(ctx, &statements, `SELECT count(DISTINCT created_at) FROM orders`)
	t.Logf("%d orders in %d statements", orders, statements)
}
