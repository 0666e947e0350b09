-- Grants, durable jobs and the hash-chained audit log.
-- Times are Unix epoch milliseconds (UTC) in BIGINT, the same on SQLite,
-- so that every comparison is exact and identical on both backends.

CREATE TABLE grants (
    id              TEXT PRIMARY KEY,          -- UUIDv7: sorts by creation
    user_name       TEXT NOT NULL,
    role            TEXT NOT NULL,
    ticket          TEXT,                      -- NULL: the role needs no change ticket
    justification   TEXT NOT NULL,
    requested_by    TEXT NOT NULL,
    state           TEXT NOT NULL,
    starts_at       BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    ended_at        BIGINT,
    end_reason      TEXT,
    end_note        TEXT,
    role_added_at   BIGINT,
    role_removed_at BIGINT,
    last_error      TEXT,
    CHECK (state IN ('pending_approval', 'approved', 'active', 'ended', 'denied', 'cancelled')),
    CHECK (expires_at > starts_at)
);
CREATE INDEX grants_by_pair ON grants (user_name, role, state);
CREATE INDEX grants_by_ticket ON grants (ticket);
CREATE INDEX grants_by_state ON grants (state, id);

CREATE TABLE jobs (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            TEXT NOT NULL DEFAULT 'converge',
    user_name       TEXT NOT NULL,
    role            TEXT NOT NULL,
    grant_id        TEXT REFERENCES grants (id),
    status          TEXT NOT NULL DEFAULT 'pending',
    due_at          BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    CHECK (status IN ('pending', 'done', 'failed'))
);
CREATE INDEX jobs_due ON jobs (next_attempt_at) WHERE status = 'pending';

CREATE TABLE audit (
    seq        BIGINT PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    kind       TEXT NOT NULL,
    grant_id   TEXT,
    ticket     TEXT,
    data       TEXT NOT NULL,                  -- canonical JSON, as hashed
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE
);
CREATE INDEX audit_by_grant ON audit (grant_id);

-- Append-only: the chain makes tampering evident, these make it deliberate.
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit
FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
