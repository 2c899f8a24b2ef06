-- Crash-loop protection: how many times a redelivered message was started without being settled.
-- Written in its own transaction before the job runs, so the count survives a crash of the process;
-- a message that keeps killing the process is dead-lettered as `poison` after `crash_limit` starts.
CREATE TABLE delivery_ledger (
    message_key   text        PRIMARY KEY,    -- sha256(body) || ':' || message_id
    starts        integer     NOT NULL,
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    last_consumer text
);
