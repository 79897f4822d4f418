-- An outbox row that can never become a task (its type is unknown to this
-- version, its payload no longer validates) is marked dead with its reason
-- in last_error, instead of being retried forever. Dead rows are not due,
-- are not counted in outbox_pending, and are requeued by an operator
-- (`api outbox requeue`).

-- +goose Up
ALTER TABLE outbox ADD COLUMN dead_at TIMESTAMPTZ;
CREATE INDEX outbox_dead_idx ON outbox (dead_at) WHERE dead_at IS NOT NULL;

-- +goose Down
DROP INDEX outbox_dead_idx;
ALTER TABLE outbox DROP COLUMN dead_at;
