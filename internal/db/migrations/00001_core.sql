-- +goose Up
CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    email         TEXT NOT NULL,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL DEFAULT '',
    role          TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Emails compare case-insensitively: Alice@x and alice@x are one account.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE orders (
    id           BIGSERIAL PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    total_cents  BIGINT NOT NULL CHECK (total_cents >= 0),
    currency     CHAR(3) NOT NULL,
    items        JSONB NOT NULL DEFAULT '[]',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed_at TIMESTAMPTZ
);
CREATE INDEX orders_user_id_idx ON orders (user_id, created_at DESC);
-- maintenance:cleanup deletes finished orders by age.
CREATE INDEX orders_finished_idx ON orders (updated_at) WHERE status IN ('completed', 'failed');

-- One row per email that left (or is leaving) the system. dedup_key is what
-- makes a retried or recovered task send at most once.
CREATE TABLE email_log (
    id         BIGSERIAL PRIMARY KEY,
    dedup_key  TEXT NOT NULL UNIQUE,
    recipient  TEXT NOT NULL,
    template   TEXT NOT NULL,
    subject    TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'sending' CHECK (status IN ('sending', 'sent', 'failed')),
    error      TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at    TIMESTAMPTZ
);
CREATE INDEX email_log_created_idx ON email_log (created_at);

-- +goose Down
DROP TABLE email_log;
DROP TABLE orders;
DROP TABLE users;
