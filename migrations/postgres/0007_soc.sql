-- Reported findings as incidents: opened when a sweep first sees one,
-- resolved when a sweep that looks for it no longer does. The SOC hears each
-- edge once instead of every sweep.
CREATE TABLE incidents (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         TEXT NOT NULL,              -- break_glass_held | oauth_client_privileged | standing_privilege (report-only role) | conflicting_writer
    subject      TEXT NOT NULL,              -- the user, or `oauth-client name (id)`
    role         TEXT NOT NULL,
    detail       TEXT NOT NULL,
    opened_at    BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    last_seen_by TEXT NOT NULL,              -- the sweep run that saw it last
    resolved_at  BIGINT
);
CREATE UNIQUE INDEX incidents_open ON incidents (kind, subject, role) WHERE resolved_at IS NULL;

-- The newest login seen for each break-glass account: a restart neither
-- misses nor repeats one.
CREATE TABLE break_glass_logins (
    user_name     TEXT PRIMARY KEY,
    last_login_at BIGINT,
    checked_at    BIGINT NOT NULL
);

-- How far each SIEM endpoint has been fed, in audit order: the audit log,
-- written in each event's own transaction, is the feed's outbox.
CREATE TABLE feed_cursors (
    endpoint        TEXT PRIMARY KEY,
    last_seq        BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    delivered_at    BIGINT
);
