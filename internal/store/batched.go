package store

import (
	"context"
	"fmt"

	"github.com/lib/pq"
)

// The statements below are the single-row statements of every order's two
// tasks (order:process, email:order_confirmation) for many rows at once: the
// worker gathers the calls of the tasks running at the same time into one
// statement (internal/batch), so N concurrent tasks cost one round trip and,
// for the writes, one commit, instead of N. Each has the meaning of its
// single-row version for every row. Their plans do not depend on the number
// of rows (a primary- or unique-key probe per row), so they may run
// prepared.

// GetMany returns the orders of ids that exist, by ID: Get for many orders.
func (r *Orders) GetMany(ctx context.Context, ids []int64) (map[int64]Order, error) {
	var rows []Order
	err := r.q.SelectContext(ctx, &rows, `SELECT `+orderCols+` FROM orders WHERE id = ANY($1::bigint[])`, pq.Array(ids))
	if err != nil {
		return nil, mapErr(err, fmt.Sprintf("get %d orders", len(ids)))
	}
	out := make(map[int64]Order, len(rows))
	for _, o := range rows {
		out[o.ID] = o
	}
	return out, nil
}

// TransitionMany moves every order of ids whose status is one of from to
// status `to`, and returns those it moved, by ID, as they are afterwards:
// Transition for many orders (an order it did not move is left alone, as
// Transition leaves it).
func (r *Orders) TransitionMany(ctx context.Context, ids []int64, to string, from ...string) (map[int64]Order, error) {
	var rows []Order
	err := r.q.SelectContext(ctx, &rows,
		`UPDATE orders SET status = $2, updated_at = now(),
		        processed_at = CASE WHEN $2 IN ('completed', 'failed') THEN now() ELSE processed_at END
		  WHERE id = ANY($1::bigint[]) AND status = ANY($3) RETURNING `+orderCols,
		pq.Array(ids), to, pqStrings(from))
	if err != nil {
		return nil, mapErr(err, fmt.Sprintf("%d orders to %s", len(ids), to))
	}
	out := make(map[int64]Order, len(rows))
	for _, o := range rows {
		out[o.ID] = o
	}
	return out, nil
}

// OrderCustomer is an order with the user who placed it.
type OrderCustomer struct {
	Order
	User User `db:"u"`
}

// GetManyWithCustomer returns the orders of ids that exist, each with its
// customer, by ID: GetWithCustomer for many orders.
func (r *Orders) GetManyWithCustomer(ctx context.Context, ids []int64) (map[int64]OrderCustomer, error) {
	var rows []OrderCustomer
	err := r.q.SelectContext(ctx, &rows, `SELECT `+prefixCols("o", orderCols, "")+`, `+prefixCols("u", userCols, "u.")+`
		FROM orders o JOIN users u ON u.id = o.user_id WHERE o.id = ANY($1::bigint[])`, pq.Array(ids))
	if err != nil {
		return nil, mapErr(err, fmt.Sprintf("get %d orders with their customers", len(ids)))
	}
	out := make(map[int64]OrderCustomer, len(rows))
	for _, o := range rows {
		out[o.ID] = o
	}
	return out, nil
}

// ClaimMany is Claim for many entries: it returns, for each entry in order,
// whether this call claimed its key. A key already held, or named by an
// earlier entry of es, is not claimed (read the holder with Get).
func (r *EmailLog) ClaimMany(ctx context.Context, es []EmailEntry) ([]bool, error) {
	// Only the first entry of a key is inserted: the row then holds
	// exactly what its claimant sends.
	first := make(map[string]int, len(es))
	var keys, to, tmpl, subj []string
	for i, e := range es {
		if _, dup := first[e.DedupKey]; dup {
			continue
		}
		first[e.DedupKey] = i
		keys, to, tmpl, subj = append(keys, e.DedupKey), append(to, e.Recipient), append(tmpl, e.Template), append(subj, e.Subject)
	}
	var got []string
	err := r.q.SelectContext(ctx, &got,
		`INSERT INTO email_log (dedup_key, recipient, template, subject, status)
		 SELECT k, r, t, s, 'sending' FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS e(k, r, t, s)
		 ON CONFLICT (dedup_key) DO NOTHING RETURNING dedup_key`,
		pq.Array(keys), pq.Array(to), pq.Array(tmpl), pq.Array(subj))
	if err != nil {
		return nil, mapErr(err, fmt.Sprintf("claim %d emails", len(keys)))
	}
	out := make([]bool, len(es))
	for _, k := range got {
		out[first[k]] = true
	}
	return out, nil
}

// MarkSentMany is MarkSent for many keys, in one statement.
func (r *EmailLog) MarkSentMany(ctx context.Context, keys []string) error {
	_, err := r.q.ExecContext(ctx,
		`UPDATE email_log SET status = 'sent', sent_at = now(), error = '' WHERE dedup_key = ANY($1::text[])`,
		pq.Array(keys))
	return mapErr(err, fmt.Sprintf("mark %d emails sent", len(keys)))
}
