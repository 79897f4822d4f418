package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// IdempotencyRecord is the first response to a request made with an
// Idempotency-Key. Status 0 means the first request has not finished.
type IdempotencyRecord struct {
	Owner       string    `db:"owner"`
	Key         string    `db:"key"`
	RequestHash string    `db:"request_hash"`
	Status      int       `db:"status"`
	Body        []byte    `db:"body"`
	CreatedAt   time.Time `db:"created_at"`
	ExpiresAt   time.Time `db:"expires_at"`
}

// Idempotency stores idempotency keys per caller (owner).
type Idempotency struct{ q Querier }

// NewIdempotency returns a repository over q.
func NewIdempotency(q Querier) *Idempotency { return &Idempotency{q: q} }

// Reserve claims (owner, key) for a request whose body hashes to hash, for
// ttl. It returns reserved=true when the caller now owns the key (it was new
// or had expired), with the new record; otherwise existing is the live
// record holding it.
//
// Inside a transaction, a concurrent Reserve of the same key waits until the
// first transaction ends: after a commit it sees the finished record, after
// a rollback it reserves the key itself. That is how order creation makes
// the key and the order atomic.
func (r *Idempotency) Reserve(ctx context.Context, owner, key, hash string, ttl time.Duration) (reserved bool, existing IdempotencyRecord, err error) {
	var rec IdempotencyRecord
	err = r.q.GetContext(ctx, &rec,
		`INSERT INTO idempotency_keys (owner, key, request_hash, status, body, expires_at)
		 VALUES ($1, $2, $3, 0, NULL, now() + make_interval(secs => $4))
		 ON CONFLICT (owner, key) DO UPDATE
		    SET request_hash = EXCLUDED.request_hash, status = 0, body = NULL,
		        created_at = clock_timestamp(), expires_at = EXCLUDED.expires_at
		  WHERE idempotency_keys.expires_at <= now()
		 RETURNING *`,
		owner, key, hash, ttl.Seconds())
	if err == nil {
		return true, rec, nil // the reservation: its CreatedAt names this lifetime of the key
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return false, IdempotencyRecord{}, mapErr(err, "reserve idempotency key")
	}
	err = r.q.GetContext(ctx, &existing,
		`SELECT * FROM idempotency_keys WHERE owner = $1 AND key = $2`, owner, key)
	return false, existing, mapErr(err, "get idempotency key")
}

// Complete stores the response of the request that reserved (owner, key).
func (r *Idempotency) Complete(ctx context.Context, owner, key string, status int, body []byte) error {
	_, err := r.q.ExecContext(ctx,
		`UPDATE idempotency_keys SET status = $3, body = $4 WHERE owner = $1 AND key = $2`,
		owner, key, status, body)
	return mapErr(err, "complete idempotency key")
}

// Release forgets an unfinished reservation (the request failed without side
// effects), so the key can be used again.
func (r *Idempotency) Release(ctx context.Context, owner, key string) error {
	_, err := r.q.ExecContext(ctx,
		`DELETE FROM idempotency_keys WHERE owner = $1 AND key = $2 AND status = 0`, owner, key)
	return mapErr(err, "release idempotency key")
}

// DeleteExpired deletes expired keys (maintenance:cleanup). The cutoff
// argument is ignored: keys carry their own expiry.
func (r *Idempotency) DeleteExpired(ctx context.Context, _ time.Time) (int64, error) {
	res, err := r.q.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE expires_at <= now()`)
	if err != nil {
		return 0, mapErr(err, "delete expired idempotency keys")
	}
	return res.RowsAffected()
}
