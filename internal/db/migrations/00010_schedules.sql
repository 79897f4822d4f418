-- +goose Up
-- Cron schedules that live in the database (the file's are read-only and never
-- stored here). The scheduler reads the rows every SCHEDULE_SYNC_INTERVAL and
-- on the schedules_changed notification; it validates each row and skips (and
-- logs) rows it cannot use, so columns stay permissive: the API validates.
CREATE TABLE schedules (
    id                     BIGSERIAL PRIMARY KEY,
    name                   TEXT NOT NULL UNIQUE,
    spec                   TEXT NOT NULL,
    timezone               TEXT NOT NULL DEFAULT 'UTC',
    task_type              TEXT NOT NULL,
    payload                JSONB,
    queue                  TEXT NOT NULL DEFAULT '',
    max_retry              INTEGER,
    timeout_seconds        INTEGER,
    catchup_window_seconds INTEGER,
    enabled                BOOLEAN NOT NULL DEFAULT true,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- updated_at is when the current definition took effect: the scheduler
    -- never fires (or catches up) a tick of the row from before it.
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_fired_at          TIMESTAMPTZ,
    last_task_id           TEXT NOT NULL DEFAULT ''
);

-- +goose StatementBegin
CREATE FUNCTION schedules_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('schedules_changed', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

-- Definition changes wake the schedulers at once; last_fired_at updates
-- (one per fire) do not.
CREATE TRIGGER schedules_changed
    AFTER INSERT OR DELETE OR UPDATE OF name, spec, timezone, task_type, payload, queue,
        max_retry, timeout_seconds, catchup_window_seconds, enabled
    ON schedules FOR EACH STATEMENT EXECUTE FUNCTION schedules_notify();

-- +goose Down
DROP TABLE schedules;
DROP FUNCTION schedules_notify();
