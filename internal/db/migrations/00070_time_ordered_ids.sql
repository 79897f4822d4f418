-- New workflows, workflow step tasks and outbox rows get time-ordered UUIDs
-- (version 7: 48 bits of Unix milliseconds, then random bits) instead of
-- random ones. Their primary keys are B-trees: with random keys every
-- insert lands on some page of the whole index, which on a large table is
-- rarely in shared_buffers (a read, often a dirty page written out to make
-- room) and is written to the WAL in full the first time it changes after
-- each checkpoint. Time-ordered keys go to the few pages at the index's
-- newest end. IDs stay unique and unguessable enough for their use (they
-- are not secrets: the API checks who may read what), and existing IDs are
-- untouched.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION time_ordered_uuid() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    -- A random (version 4) UUID whose first 6 bytes become the time in ms,
    -- and whose version nibble becomes 7 (bits 52 and 53 of its bytes).
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
               PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
               FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;
-- +goose StatementEnd
ALTER TABLE workflows ALTER COLUMN id SET DEFAULT time_ordered_uuid();
ALTER TABLE workflow_steps ALTER COLUMN task_id SET DEFAULT time_ordered_uuid();
ALTER TABLE outbox ALTER COLUMN id SET DEFAULT time_ordered_uuid();

-- +goose Down
ALTER TABLE outbox ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE workflow_steps ALTER COLUMN task_id SET DEFAULT gen_random_uuid();
ALTER TABLE workflows ALTER COLUMN id SET DEFAULT gen_random_uuid();
DROP FUNCTION time_ordered_uuid();
