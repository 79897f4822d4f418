-- retried is how many times a step's task was retried before the attempt
-- that ended it (NULL: not recorded, for steps finished before this
-- migration or cancelled). A step's task stays in Redis only for its
-- type's retention (a system:ping step's not at all), so once it is gone
-- GET /api/v1/tasks/{id} answers from the step, attempts included.

-- +goose Up
ALTER TABLE workflow_steps ADD COLUMN retried INT;

-- +goose Down
ALTER TABLE workflow_steps DROP COLUMN retried;
