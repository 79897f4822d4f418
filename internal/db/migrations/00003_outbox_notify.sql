-- The outbox wakes its relay from a trigger rather than from the code that
-- inserts: one notification per statement whoever writes the row, and one
-- round trip fewer per row for the writer. Delivered at commit, like any
-- NOTIFY, so the relay never wakes for a row it cannot see yet.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION outbox_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('conveyor_outbox', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

CREATE TRIGGER outbox_added
    AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- +goose Down
DROP TRIGGER outbox_added ON outbox;
DROP FUNCTION outbox_notify();
