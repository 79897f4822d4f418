package store

import "github.com/google/uuid"

// newID returns a new time-ordered (version 7) UUID for a workflow or a
// step's task (which is also its outbox row's ID). Chosen here rather than
// by the columns' time_ordered_uuid() default (migration 00070), which
// PostgreSQL evaluates as a chain of some ten functions per row: an order's
// statement then also need not send the IDs back. Both kinds of ID sort by
// time, so inserts still go to the newest end of the primary keys.
func newID() string { return uuid.Must(uuid.NewV7()).String() }
