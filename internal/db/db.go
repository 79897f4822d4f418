// Package db opens PostgreSQL connections (sqlx over lib/pq), applies the
// embedded goose migrations and offers a transaction helper. SQL statements
// themselves live in internal/store.
package db

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the "postgres" driver
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Open connects to url and checks the connection with a ping.
func Open(ctx context.Context, url string) (*sqlx.DB, error) {
	d, err := sqlx.Open("postgres", url)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	SetPoolSize(d, 20)
	d.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.PingContext(pctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return d, nil
}

// SetPoolSize sets how many connections d keeps, open and idle alike
// (DATABASE_MAX_CONNS): fewer idle than open connections would close and
// reopen connections (a PostgreSQL backend each) all through a busy spell.
func SetPoolSize(d *sqlx.DB, n int) {
	d.SetMaxOpenConns(n)
	d.SetMaxIdleConns(n)
}

// Migrations returns the embedded migration files (for hashing in tests).
func Migrations() fs.FS {
	sub, _ := fs.Sub(migrations, "migrations")
	return sub
}

// Migrate applies every pending migration. goose takes a PostgreSQL advisory
// lock, so several api replicas starting at once are safe.
func Migrate(ctx context.Context, d *sql.DB) (applied int, err error) {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return 0, fmt.Errorf("migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, d, Migrations(), goose.WithSessionLocker(locker),
		// Features are developed in parallel with reserved version ranges; a
		// database that already has a later one must still take an earlier one.
		goose.WithAllowOutofOrder(true))
	if err != nil {
		return 0, fmt.Errorf("migrations: %w", err)
	}
	res, err := p.Up(ctx)
	if err != nil {
		return len(res), fmt.Errorf("migrate: %w", err)
	}
	return len(res), nil
}

// InTx runs fn in a transaction, committing if it returns nil and rolling
// back otherwise (also on panic).
func InTx(ctx context.Context, d *sqlx.DB, fn func(tx *sqlx.Tx) error) (err error) {
	tx, err := d.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
		if err != nil {
			if rbErr := tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
				err = errors.Join(err, rbErr)
			}
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
