-- +goose Up
-- A user's email address counts as proven once its owner followed the signed
-- link of the welcome email (or the account was made with `api createuser`).
-- Only proven addresses receive mail carrying user-chosen text.
ALTER TABLE users ADD COLUMN email_verified_at TIMESTAMPTZ;
-- Mail to unproven addresses is limited per recipient: counted here.
CREATE INDEX email_log_recipient_created_idx ON email_log (lower(recipient), created_at);

-- +goose Down
DROP INDEX email_log_recipient_created_idx;
ALTER TABLE users DROP COLUMN email_verified_at;
