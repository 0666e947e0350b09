-- SOC email: a durable outbox. A row is written in the same transaction as
-- the audit event it reports (one row per event at most: audit_seq is
-- unique), then delivered by the mailer under a lease, with backoff while the
-- SMTP server is down.

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    audit_seq       BIGINT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending',
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     BIGINT,
    sent_at         BIGINT,
    last_error      TEXT,
    CHECK (status IN ('pending', 'sent', 'failed'))
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';

-- When the SOC was told a grant's role outlived its expiry (at most once).
ALTER TABLE grants ADD COLUMN overdue_alerted_at BIGINT;
