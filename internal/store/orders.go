package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/lib/pq"
)

// Order statuses. An order moves pending → processing → completed, or ends
// failed once its processing task has exhausted its retries.
const (
	OrderPending    = "pending"
	OrderProcessing = "processing"
	OrderCompleted  = "completed"
	OrderFailed     = "failed"
)

// OrderItem is one line of an order.
type OrderItem struct {
	SKU            string `json:"sku"`
	Quantity       int64  `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

// Order is a row of orders.
type Order struct {
	ID          int64           `db:"id" json:"id"`
	UserID      int64           `db:"user_id" json:"user_id"`
	Status      string          `db:"status" json:"status"`
	TotalCents  int64           `db:"total_cents" json:"total_cents"`
	Currency    string          `db:"currency" json:"currency"`
	ItemsJSON   json.RawMessage `db:"items" json:"items"`
	CreatedAt   time.Time       `db:"created_at" json:"created_at"`
	UpdatedAt   time.Time       `db:"updated_at" json:"updated_at"`
	ProcessedAt *time.Time      `db:"processed_at" json:"processed_at"`
	// WorkflowID names the workflow that fulfils the order (nil for orders
	// placed before workflows existed).
	WorkflowID *string `db:"workflow_id" json:"workflow_id"`
}

// Items decodes the order's items.
func (o Order) Items() ([]OrderItem, error) {
	var items []OrderItem
	if err := json.Unmarshal(o.ItemsJSON, &items); err != nil {
		return nil, fmt.Errorf("order %d items: %w", o.ID, err)
	}
	return items, nil
}

// Orders is the orders repository.
type Orders struct{ q Querier }

// NewOrders returns a repository over q.
func NewOrders(q Querier) *Orders { return &Orders{q: q} }

const orderCols = `id, user_id, status, total_cents, currency, items, created_at, updated_at, processed_at, workflow_id`

// Create inserts a pending order for userID with items, computing the total,
// and returns the stored row.
func (r *Orders) Create(ctx context.Context, userID int64, currency string, items []OrderItem) (Order, error) {
	total, raw, err := orderTotal(items)
	if err != nil {
		return Order{}, err
	}
	var o Order
	err = r.q.GetContext(ctx, &o,
		`INSERT INTO orders (user_id, status, total_cents, currency, items)
		 VALUES ($1, 'pending', $2, $3, $4) RETURNING `+orderCols,
		userID, total, currency, raw)
	return o, mapErr(err, "create order")
}

// NewOrder is an order to insert with CreateWithWorkflow.
type NewOrder struct {
	// ID comes from ReserveIDs: the caller needs it before the insert, to
	// put it in the payloads of the order's tasks.
	ID       int64
	UserID   int64
	Currency string
	Items    []OrderItem
}

// ReserveIDs takes n order IDs from the orders' sequence, for orders
// inserted later by CreateWithWorkflow. An ID reserved but never used is a
// gap, as a rolled-back insert leaves.
func (r *Orders) ReserveIDs(ctx context.Context, n int) ([]int64, error) {
	ids := []int64{}
	err := r.q.SelectContext(ctx, &ids, `SELECT nextval('orders_id_seq') FROM generate_series(1, $1)`, n)
	return ids, mapErr(err, "reserve order ids")
}

// CreateWithWorkflow inserts pending order o (computing its total) and the
// workflow nw that fulfils it, named by the order (WorkflowID), with the
// outbox rows of the workflow's first steps (see Workflows.Create): one
// statement, so the order and its tasks commit together or not at all even
// when q is not a transaction. It returns the stored order and the
// workflow's steps in the order given.
func (r *Orders) CreateWithWorkflow(ctx context.Context, o NewOrder, nw NewWorkflow) (Order, []CreatedStep, error) {
	orders, steps, err := r.CreateManyWithWorkflows(ctx, []NewOrder{o}, []NewWorkflow{nw})
	if err != nil {
		return Order{}, nil, err
	}
	return orders[0], steps[0], nil
}

// CreateManyWithWorkflows is CreateWithWorkflow for many orders, os[i]
// fulfilled by nws[i], in one statement: all of them commit or none. It
// returns the stored orders and their workflows' steps in os's order.
func (r *Orders) CreateManyWithWorkflows(ctx context.Context, os []NewOrder, nws []NewWorkflow) ([]Order, [][]CreatedStep, error) {
	if len(os) != len(nws) {
		return nil, nil, fmt.Errorf("create orders: %d orders, %d workflows", len(os), len(nws))
	}
	ids, users, totals := make([]int64, len(os)), make([]int64, len(os)), make([]int64, len(os))
	currencies, items := make([]string, len(os)), make([]string, len(os))
	for i, o := range os {
		total, raw, err := orderTotal(o.Items)
		if err != nil {
			return nil, nil, err
		}
		ids[i], users[i], totals[i], currencies[i], items[i] = o.ID, o.UserID, total, o.Currency, string(raw)
	}
	ctes, args, wfIDs, steps := workflowsInsert(nws, 6)
	var rows []Order
	err := r.q.SelectContext(ctx, &rows,
		`WITH `+ctes+`, o AS (
		     INSERT INTO orders (id, user_id, status, total_cents, currency, items, workflow_id)
		     SELECT o.id, o.uid, 'pending', o.total, o.cur, o.items::jsonb, o.wf
		       FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::uuid[])
		            AS o(id, uid, total, cur, items, wf)
		     RETURNING `+orderCols+`
		 )
		 SELECT * FROM o`,
		append([]any{pq.Array(ids), pq.Array(users), pq.Array(totals), pq.Array(currencies), pq.Array(items), pq.Array(wfIDs)}, args...)...)
	if err != nil {
		return nil, nil, mapErr(err, fmt.Sprintf("create %d orders", len(os)))
	}
	byID := make(map[int64]Order, len(rows))
	for _, o := range rows {
		byID[o.ID] = o
	}
	out := make([]Order, len(os))
	for i, o := range os {
		var ok bool
		if out[i], ok = byID[o.ID]; !ok {
			return nil, nil, fmt.Errorf("create orders: order %d not returned", o.ID)
		}
	}
	return out, steps, nil
}

// orderTotal returns the total of items and their JSON.
func orderTotal(items []OrderItem) (int64, []byte, error) {
	var total int64
	for _, it := range items {
		total += it.Quantity * it.UnitPriceCents
	}
	raw, err := json.Marshal(items)
	if err != nil {
		return 0, nil, fmt.Errorf("encode items: %w", err)
	}
	return total, raw, nil
}

// Get returns the order with id.
func (r *Orders) Get(ctx context.Context, id int64) (Order, error) {
	var o Order
	err := r.q.GetContext(ctx, &o, `SELECT `+orderCols+` FROM orders WHERE id = $1`, id)
	return o, mapErr(err, fmt.Sprintf("get order %d", id))
}

// GetWithCustomer returns the order with id and the user who placed it, in
// one round trip (the confirmation email needs both).
func (r *Orders) GetWithCustomer(ctx context.Context, id int64) (Order, User, error) {
	var row struct {
		Order
		User User `db:"u"`
	}
	err := r.q.GetContext(ctx, &row, `SELECT `+prefixCols("o", orderCols, "")+`, `+prefixCols("u", userCols, "u.")+`
		FROM orders o JOIN users u ON u.id = o.user_id WHERE o.id = $1`, id)
	return row.Order, row.User, mapErr(err, fmt.Sprintf("get order %d with its customer", id))
}

// prefixCols qualifies each of the comma-separated cols with table and,
// when as is not empty, names it as+col (sqlx's name for a field of a
// struct tagged as).
func prefixCols(table, cols, as string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		c = strings.TrimSpace(c)
		parts[i] = table + "." + c
		if as != "" {
			parts[i] += ` AS "` + as + c + `"`
		}
	}
	return strings.Join(parts, ", ")
}

// Transition moves order id to status `to` if its current status is one of
// `from`, and returns the row as it is afterwards. If the status was not one
// of from, nothing changes and the current row is returned with changed=false,
// which is how handlers stay idempotent.
func (r *Orders) Transition(ctx context.Context, id int64, to string, from ...string) (o Order, changed bool, err error) {
	q := `UPDATE orders SET status = $2, updated_at = now(),
	        processed_at = CASE WHEN $2 IN ('completed', 'failed') THEN now() ELSE processed_at END
	      WHERE id = $1 AND status = ANY($3) RETURNING ` + orderCols
	err = r.q.GetContext(ctx, &o, q, id, to, pqStrings(from))
	if err == nil {
		return o, true, nil
	}
	if err = mapErr(err, fmt.Sprintf("order %d to %s", id, to)); !isNotFound(err) {
		return Order{}, false, err
	}
	o, err = r.Get(ctx, id)
	return o, false, err
}

// DeleteFinishedBefore deletes completed and failed orders last updated
// before cutoff and returns how many it deleted.
func (r *Orders) DeleteFinishedBefore(ctx context.Context, cutoff time.Time) (int64, error) {
	res, err := r.q.ExecContext(ctx,
		`DELETE FROM orders WHERE status IN ('completed', 'failed') AND updated_at < $1`, cutoff)
	if err != nil {
		return 0, mapErr(err, "delete finished orders")
	}
	return res.RowsAffected()
}

// List returns one page of orders, newest first, with the total: those of
// userID, or every order when userID is 0 (admins).
func (r *Orders) List(ctx context.Context, userID int64, p Page) ([]Order, int64, error) {
	out := []Order{}
	err := r.q.SelectContext(ctx, &out, `SELECT `+orderCols+` FROM orders
		WHERE ($1::bigint = 0 OR user_id = $1) ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT $3`,
		userID, p.Skip, p.Limit)
	if err != nil {
		return nil, 0, mapErr(err, "list orders")
	}
	var total int64
	if err := r.q.GetContext(ctx, &total, `SELECT count(*) FROM orders WHERE ($1::bigint = 0 OR user_id = $1)`, userID); err != nil {
		return nil, 0, mapErr(err, "count orders")
	}
	return out, total, nil
}
