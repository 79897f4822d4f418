package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// Email delivery states in email_log.
const (
	EmailSending = "sending"
	EmailSent    = "sent"
)

// EmailEntry is a row of email_log.
type EmailEntry struct {
	ID        int64      `db:"id" json:"id"`
	DedupKey  string     `db:"dedup_key" json:"dedup_key"`
	Recipient string     `db:"recipient" json:"recipient"`
	Template  string     `db:"template" json:"template"`
	Subject   string     `db:"subject" json:"subject"`
	Status    string     `db:"status" json:"status"`
	Error     string     `db:"error" json:"error"`
	CreatedAt time.Time  `db:"created_at" json:"created_at"`
	SentAt    *time.Time `db:"sent_at" json:"sent_at"`
}

// EmailLog records every email so that each dedup key is sent at most once.
type EmailLog struct{ q Querier }

// NewEmailLog returns a repository over q.
func NewEmailLog(q Querier) *EmailLog { return &EmailLog{q: q} }

// Claim reserves e.DedupKey before sending. It returns claimed=true when this
// caller now owns the send. Otherwise existing is the row that already holds
// the key: status "sent" means the email went out; "sending" means an earlier
// attempt stopped mid-send (a crash) and the outcome is unknown.
func (r *EmailLog) Claim(ctx context.Context, e EmailEntry) (claimed bool, existing EmailEntry, err error) {
	res, err := r.q.ExecContext(ctx,
		`INSERT INTO email_log (dedup_key, recipient, template, subject, status)
		 VALUES ($1, $2, $3, $4, 'sending') ON CONFLICT (dedup_key) DO NOTHING`,
		e.DedupKey, e.Recipient, e.Template, e.Subject)
	if err != nil {
		return false, EmailEntry{}, mapErr(err, "claim email "+e.DedupKey)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return true, EmailEntry{}, nil
	}
	existing, err = r.Get(ctx, e.DedupKey)
	return false, existing, err
}

// Get returns the entry for key.
func (r *EmailLog) Get(ctx context.Context, key string) (EmailEntry, error) {
	var e EmailEntry
	err := r.q.GetContext(ctx, &e, `SELECT * FROM email_log WHERE dedup_key = $1`, key)
	return e, mapErr(err, "get email "+key)
}

// MarkSent records a successful send of key.
func (r *EmailLog) MarkSent(ctx context.Context, key string) error {
	_, err := r.q.ExecContext(ctx,
		`UPDATE email_log SET status = 'sent', sent_at = now(), error = '' WHERE dedup_key = $1`, key)
	return mapErr(err, "mark email sent "+key)
}

// Release gives up a claim after a send that certainly did not happen (the
// server refused it), so a retry may claim the key again.
func (r *EmailLog) Release(ctx context.Context, key string) error {
	_, err := r.q.ExecContext(ctx, `DELETE FROM email_log WHERE dedup_key = $1 AND status = 'sending'`, key)
	return mapErr(err, "release email "+key)
}

// MarkFailed records a permanent failure of key (the row keeps the key, so
// the email is not retried by a duplicate task either).
func (r *EmailLog) MarkFailed(ctx context.Context, key, reason string) error {
	_, err := r.q.ExecContext(ctx,
		`UPDATE email_log SET status = 'failed', error = $2 WHERE dedup_key = $1`, key, reason)
	return mapErr(err, "mark email failed "+key)
}

// CountByKey returns how many rows hold key (0 or 1); tests use it.
func (r *EmailLog) CountByKey(ctx context.Context, key string) (int, error) {
	var n int
	err := r.q.GetContext(ctx, &n, `SELECT count(*) FROM email_log WHERE dedup_key = $1`, key)
	return n, mapErr(err, fmt.Sprintf("count email %s", key))
}

// DeleteBefore deletes entries created before cutoff.
func (r *EmailLog) DeleteBefore(ctx context.Context, cutoff time.Time) (int64, error) {
	res, err := r.q.ExecContext(ctx, `DELETE FROM email_log WHERE created_at < $1 AND status <> 'sending'`, cutoff)
	if err != nil {
		return 0, mapErr(err, "delete old emails")
	}
	return res.RowsAffected()
}

// ClaimLimited is Claim for mail to an address whose owner has not proven
// it: the claim succeeds only while fewer than max emails were claimed for
// the recipient within window. limited reports a refusal for that reason.
// Concurrent claims for one recipient are serialised (an advisory lock on
// the address), so the limit is exact. q must be a *sqlx.DB or a transaction
// the caller commits.
func (r *EmailLog) ClaimLimited(ctx context.Context, e EmailEntry, max int, window time.Duration) (claimed, limited bool, existing EmailEntry, err error) {
	err = inTx(ctx, r.q, func(q Querier) error {
		if _, err := q.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('email_log:' || lower($1), 0))`, e.Recipient); err != nil {
			return mapErr(err, "lock recipient")
		}
		var got EmailEntry
		switch err := q.GetContext(ctx, &got, `SELECT * FROM email_log WHERE dedup_key = $1`, e.DedupKey); {
		case err == nil:
			existing = got // handled before: Claim's answer, not a limit
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return mapErr(err, "get email "+e.DedupKey)
		}
		var n int
		if err := q.GetContext(ctx, &n,
			`SELECT count(*) FROM email_log WHERE lower(recipient) = lower($1) AND created_at > now() - make_interval(secs => $2)`,
			e.Recipient, window.Seconds()); err != nil {
			return mapErr(err, "count emails to recipient")
		}
		if n >= max {
			limited = true
			return nil
		}
		c, ex, err := NewEmailLog(q).Claim(ctx, e)
		claimed, existing = c, ex
		return err
	})
	return claimed, limited, existing, err
}

// inTx runs f in a transaction: q's own when it is one, else a new one on q.
func inTx(ctx context.Context, q Querier, f func(Querier) error) error {
	d, ok := q.(*sqlx.DB)
	if !ok {
		return f(q)
	}
	tx, err := d.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := f(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}
