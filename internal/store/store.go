// Package store is the only place SQL lives. Each repository wraps a *sqlx.DB
// (or a transaction, through the Querier interface) and returns plain structs
// and the sentinel errors below; callers never see lib/pq types.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// uuidText is PostgreSQL's text form of a uuid (any case).
var uuidText = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// IsUUID reports whether s is a uuid as the IDs of workflows and outbox rows
// are written: a string that is not cannot name one, and passed to a uuid
// parameter it would fail the whole statement.
func IsUUID(s string) bool { return uuidText.MatchString(s) }

// Sentinel errors that callers branch on.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	// ErrMissingReference: a row refers to one that does not exist (a
	// foreign key violation), e.g. an order of a user deleted meanwhile.
	ErrMissingReference = errors.New("missing reference")
)

// Querier is what a repository needs: *sqlx.DB and *sqlx.Tx both satisfy it,
// so the same methods run inside or outside a transaction.
type Querier interface {
	sqlx.ExtContext
	GetContext(ctx context.Context, dest any, query string, args ...any) error
	SelectContext(ctx context.Context, dest any, query string, args ...any) error
}

// mapErr turns driver errors into the package's sentinels, adding what.
func mapErr(err error, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) && pqErr.Code == "23505" { // unique_violation
		return fmt.Errorf("%s: %w (%s)", what, ErrConflict, pqErr.Constraint)
	}
	if errors.As(err, &pqErr) && pqErr.Code == "23503" { // foreign_key_violation
		return fmt.Errorf("%s: %w (%s)", what, ErrMissingReference, pqErr.Constraint)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// pqStrings adapts a string slice to a PostgreSQL text[] parameter.
func pqStrings(s []string) any { return pq.Array(s) }

// Page is an offset page of a list: Skip rows, then at most Limit rows.
// Callers validate the bounds (the API allows 1 ≤ Limit ≤ 100).
type Page struct {
	Skip  int64
	Limit int64
}
