-- A workflow's steps are read in their listed order with ORDER BY position
-- over the primary key's (workflow_id, step_id) range: a sort of one
-- workflow's steps, cheap even at 10,000. The unique index on (workflow_id,
-- position) cost every step inserted (two per order, 10,000 per chord of
-- 10,000) one more index entry on a hot right-edge page, and guarded
-- nothing: positions are assigned 0..n-1 by the code that inserts a
-- workflow's steps in one statement.

-- +goose Up
DROP INDEX workflow_steps_position_idx;

-- +goose Down
CREATE UNIQUE INDEX workflow_steps_position_idx ON workflow_steps (workflow_id, position);
