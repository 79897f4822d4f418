package store

import (
	"context"
	"database/sql"

	"github.com/jmoiron/sqlx"
)

// InTx returns a Querier that runs the statements it is given as p's
// prepared statements inside tx, a transaction of p's database (each is
// prepared on tx's connection the first time it runs there, then kept):
// for a transaction that a hot path runs over and over with the same few
// statements (the worker's workflow advancement). A statement whose cached
// plan went stale aborts the transaction, as any error does; it is dropped,
// so the next transaction prepares it again.
func (p *Prepared) InTx(tx *sqlx.Tx) Querier { return preparedTx{Tx: tx, p: p} }

type preparedTx struct {
	*sqlx.Tx
	p *Prepared
}

// run runs f on query's statement bound to the transaction, or on the
// transaction itself when the cache is full.
func (q preparedTx) run(ctx context.Context, query string, prepared func(*sqlx.Stmt) error, direct func() error) error {
	s, err := q.p.stmt(ctx, query)
	if err != nil {
		return err
	}
	if s == nil {
		return direct()
	}
	err = prepared(q.Tx.StmtxContext(ctx, s))
	if stalePlan(err) {
		q.p.drop(query, s)
	}
	return err
}

// GetContext implements Querier.
func (q preparedTx) GetContext(ctx context.Context, dest any, query string, args ...any) error {
	return q.run(ctx, query,
		func(s *sqlx.Stmt) error { return s.GetContext(ctx, dest, args...) },
		func() error { return q.Tx.GetContext(ctx, dest, query, args...) })
}

// SelectContext implements Querier.
func (q preparedTx) SelectContext(ctx context.Context, dest any, query string, args ...any) error {
	return q.run(ctx, query,
		func(s *sqlx.Stmt) error { return s.SelectContext(ctx, dest, args...) },
		func() error { return q.Tx.SelectContext(ctx, dest, query, args...) })
}

// ExecContext implements Querier.
func (q preparedTx) ExecContext(ctx context.Context, query string, args ...any) (res sql.Result, err error) {
	err = q.run(ctx, query,
		func(s *sqlx.Stmt) (err error) { res, err = s.ExecContext(ctx, args...); return err },
		func() (err error) { res, err = q.Tx.ExecContext(ctx, query, args...); return err })
	return res, err
}
