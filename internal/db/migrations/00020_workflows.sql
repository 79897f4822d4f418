-- Workflows: DAGs of tasks whose state lives here (internal/workflow).
-- A step's task is enqueued through the outbox once all its parents are
-- finished; the transaction that records a step's outcome also releases its
-- children, using per-step counters so that a group of N steps with one
-- callback costs O(N), not O(N²).

-- +goose Up
CREATE TABLE workflows (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name         TEXT NOT NULL DEFAULT '',
    state        TEXT NOT NULL DEFAULT 'running'
                 CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled')),
    steps_total  INT NOT NULL,
    steps_open   INT NOT NULL,            -- steps not yet succeeded, failed or cancelled
    steps_failed INT NOT NULL DEFAULT 0,  -- failed or cancelled because a parent failed
    request_id   TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(), -- last advancement
    finished_at  TIMESTAMPTZ
);
CREATE INDEX workflows_created_idx ON workflows (created_at DESC, id DESC);
CREATE INDEX workflows_state_created_idx ON workflows (state, created_at DESC, id DESC);
CREATE INDEX workflows_finished_idx ON workflows (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE workflow_steps (
    workflow_id      UUID NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    step_id          TEXT NOT NULL,
    position         INT NOT NULL,
    task_type        TEXT NOT NULL,
    payload          JSONB NOT NULL,
    -- queue, max_retry, timeout, countdown as the relay applies them
    options          JSONB NOT NULL DEFAULT '{}',
    queue            TEXT NOT NULL,
    if_parent_failed TEXT NOT NULL DEFAULT 'cancel' CHECK (if_parent_failed IN ('cancel', 'run')),
    state            TEXT NOT NULL DEFAULT 'waiting'
                     CHECK (state IN ('waiting', 'enqueued', 'succeeded', 'failed', 'cancelled')),
    parents_left     INT NOT NULL,                  -- parents not finished yet
    parent_failed    BOOLEAN NOT NULL DEFAULT false, -- some finished parent did not succeed
    -- The task's ID, chosen up front: the outbox row (and asynq task) gets it
    -- when the step is enqueued, so callers know every step's task ID at start.
    task_id          UUID NOT NULL DEFAULT gen_random_uuid(),
    result           JSONB,
    error            TEXT NOT NULL DEFAULT '',
    enqueued_at      TIMESTAMPTZ,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    checked_at       TIMESTAMPTZ,                   -- last look by the reconciler
    PRIMARY KEY (workflow_id, step_id)
);
CREATE UNIQUE INDEX workflow_steps_position_idx ON workflow_steps (workflow_id, position);
-- The reconciler's scan: enqueued steps, least recently checked first.
CREATE INDEX workflow_steps_enqueued_idx ON workflow_steps (COALESCE(checked_at, enqueued_at))
    WHERE state = 'enqueued';

CREATE TABLE workflow_edges (
    workflow_id UUID NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    parent      TEXT NOT NULL,
    child       TEXT NOT NULL,
    PRIMARY KEY (workflow_id, parent, child)
);
CREATE INDEX workflow_edges_child_idx ON workflow_edges (workflow_id, child);

-- Per-row task options and headers (a workflow step's queue, retries,
-- timeout, countdown and identity); {}: the type's defaults.
ALTER TABLE outbox ADD COLUMN options JSONB NOT NULL DEFAULT '{}';

-- The workflow that fulfils an order (order:process, then its confirmation).
ALTER TABLE orders ADD COLUMN workflow_id UUID;

-- +goose Down
ALTER TABLE orders DROP COLUMN workflow_id;
ALTER TABLE outbox DROP COLUMN options;
DROP TABLE workflow_edges;
DROP TABLE workflow_steps;
DROP TABLE workflows;
