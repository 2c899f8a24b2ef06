-- Events the broker refused for good (a full reply queue with reject-publish, say). The relay parks
-- each here, counts it, and goes on: one refused event must not hold back every later one, serious
-- adverse event alerts included. A parked event keeps everything needed to publish it again.
CREATE TABLE outbox_parked (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parked_at timestamptz NOT NULL DEFAULT now(),
    reason    text        NOT NULL,            -- ours: never a value from the event
    event     jsonb       NOT NULL             -- {event_id, routing_key, reply_to, correlation_id, headers, body}
);
