-- Workflow steps are updated in place (HOT): recording a step's outcome
-- writes the row again on its own page, without new entries in the
-- table's indexes. PostgreSQL does that only when no index covers a column
-- the update changes (a partial index's WHERE counts) and the page has room:
--
--   - the reconciler's index on enqueued steps named state, which every
--     enqueue and finish changes, so each step's outcome added an entry to
--     every index and moved the row to another page; the reconciler now
--     finds enqueued steps through the running workflows (an enqueued step
--     belongs to a running workflow), by the primary key;
--   - the rows of a workflow are inserted together, so their pages were
--     full: fillfactor leaves room for the new versions of the rows.
--
-- parents is a step's number of parents (NULL for steps stored before this
-- migration): a worker reads it when the step's task starts, to know whether
-- there are parent results to read, instead of looking for edges.

-- +goose Up
ALTER TABLE workflow_steps ADD COLUMN parents INT;
ALTER TABLE workflow_steps SET (fillfactor = 50);
DROP INDEX workflow_steps_enqueued_idx;

-- +goose Down
CREATE INDEX workflow_steps_enqueued_idx ON workflow_steps (COALESCE(checked_at, enqueued_at))
    WHERE state = 'enqueued';
ALTER TABLE workflow_steps RESET (fillfactor);
ALTER TABLE workflow_steps DROP COLUMN parents;
