-- +goose Up
-- A schedule's tasks may expire: a fire not started within expires_in_seconds
-- of its tick is archived unrun (a late "daily digest" is worse than none).
ALTER TABLE schedules ADD COLUMN expires_in_seconds INTEGER;

-- The notification trigger lists the definition's columns: add the new one.
DROP TRIGGER schedules_changed ON schedules;
CREATE TRIGGER schedules_changed
    AFTER INSERT OR DELETE OR UPDATE OF name, spec, timezone, task_type, payload, queue,
        max_retry, timeout_seconds, catchup_window_seconds, enabled, expires_in_seconds
    ON schedules FOR EACH STATEMENT EXECUTE FUNCTION schedules_notify();

-- +goose Down
DROP TRIGGER schedules_changed ON schedules;
CREATE TRIGGER schedules_changed
    AFTER INSERT OR DELETE OR UPDATE OF name, spec, timezone, task_type, payload, queue,
        max_retry, timeout_seconds, catchup_window_seconds, enabled
    ON schedules FOR EACH STATEMENT EXECUTE FUNCTION schedules_notify();
ALTER TABLE schedules DROP COLUMN expires_in_seconds;
