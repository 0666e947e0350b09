-- Web sessions live on the server: the cookie carries only a random id, kept
-- here as its SHA-256 (a copy of this table opens no session). Sign-out and
-- "end all sessions" delete rows; idle and absolute timeouts bound
-- `expires_at`; a row past it is refused and purged.
CREATE TABLE web_sessions (
    id_hash      TEXT PRIMARY KEY,
    user_name    TEXT,                     -- NULL until someone signs in
    state        TEXT NOT NULL,            -- the session's values, JSON
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,          -- idle end, never past absolute_at
    absolute_at  BIGINT NOT NULL           -- created_at + the absolute timeout
);
CREATE INDEX web_sessions_user ON web_sessions (user_name);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);

-- A request to move a live grant's end past what its approvers approved:
-- the end moves only when the same quorum approves it.
CREATE TABLE extension_requests (
    id            TEXT PRIMARY KEY,
    grant_id      TEXT NOT NULL REFERENCES grants (id),
    requested_by  TEXT NOT NULL,
    from_end      BIGINT NOT NULL,         -- the grant's end when asked
    to_end        BIGINT NOT NULL,         -- the end asked for
    state         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    decided_at    BIGINT,
    CHECK (state IN ('pending', 'approved', 'denied'))
);
-- One open request per grant at a time.
CREATE UNIQUE INDEX extension_requests_one_pending ON extension_requests (grant_id)
    WHERE state = 'pending';

CREATE TABLE extension_reviews (
    extension_id  TEXT NOT NULL REFERENCES extension_requests (id),
    approver      TEXT NOT NULL,
    verdict       TEXT NOT NULL,
    comment       TEXT NOT NULL,
    at            BIGINT NOT NULL,
    PRIMARY KEY (extension_id, approver),
    CHECK (verdict IN ('approve', 'deny'))
);
