-- What was done with a privilege: passes over the target's audit trail for a
-- grant's window (the preliminary one when the role is removed, final ones
-- later for late arrivals), or for a break-glass account since its login.
-- A pass is a leased row like a job; the events it found are kept once each
-- by the target's event id.

CREATE TABLE activity_passes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    subject         TEXT NOT NULL,            -- a grant id, or login:<user>:<ms>
    pass            BIGINT NOT NULL,          -- 0: preliminary
    grant_id        TEXT REFERENCES grants (id),
    user_name       TEXT NOT NULL,
    directory_id    TEXT NOT NULL,            -- the target's id of the user
    window_from     BIGINT NOT NULL,
    window_to       BIGINT,                   -- NULL: until the pass runs
    status          TEXT NOT NULL DEFAULT 'pending',
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,          -- due
    attempts        BIGINT NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     BIGINT,
    done_at         BIGINT,
    last_error      TEXT,
    UNIQUE (subject, pass),
    CHECK (status IN ('pending', 'done', 'failed'))
);
CREATE INDEX activity_passes_due ON activity_passes (next_attempt_at) WHERE status = 'pending';

CREATE TABLE activity_events (
    subject   TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    pass      BIGINT,                         -- which pass found it; NULL: a look on demand
    at        BIGINT NOT NULL,
    event     TEXT NOT NULL,                  -- JSON
    PRIMARY KEY (subject, event_id)
);
