-- The outbox no longer notifies. PostgreSQL serialises the commits of all
-- transactions that have sent a NOTIFY, WAL flush included (a database-wide
-- lock taken in PreCommit_Notify), so with fsync on every order, registration
-- and workflow start waited for the previous one's flush: no group commit.
-- Producers now hand their committed row IDs to a dispatcher in their own
-- process (queue.Dispatcher), and the relay polls for whatever none sent.

-- +goose Up
DROP TRIGGER IF EXISTS outbox_added ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();

-- +goose Down
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
