-- Core database, version 2: idempotency keys of the HTTP API.
--
-- One row per (principal, key): a hash of the request first sent with the key and, once there is one,
-- the response to replay. A row without a response is a claim: its request is still being processed,
-- or the process died. A duplicate with the same body may redo the (itself idempotent) work and complete
-- the row; the first response recorded is the one every later duplicate gets.
CREATE TABLE api_idempotency_keys (
    principal       text        NOT NULL,
    idempotency_key text        NOT NULL,
    request_hash    text        NOT NULL,
    response_status integer     CHECK (response_status BETWEEN 100 AND 599),
    -- The exact bytes sent, so a replay is byte-for-byte the first answer (jsonb would reorder keys).
    response_body   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    PRIMARY KEY (principal, idempotency_key),
    CONSTRAINT api_idempotency_keys_response_whole CHECK (
        (response_status IS NULL) = (response_body IS NULL)
        AND (response_status IS NULL) = (completed_at IS NULL)
    )
);

CREATE INDEX api_idempotency_keys_by_age ON api_idempotency_keys (created_at);
