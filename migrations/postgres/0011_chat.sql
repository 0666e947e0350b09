-- Approvals where people already are (Slack) and notices in Teams.

-- The warning before a grant ends goes out once.
ALTER TABLE grants ADD COLUMN nudged_at BIGINT;

-- The chat messages the broker posted and later updates in place: an
-- approval request (by grant or extension), keyed by what it is about.
CREATE TABLE chat_messages (
    key         TEXT PRIMARY KEY,          -- request:<grant id>, extension:<id>, nudge:<grant id>
    channel     TEXT NOT NULL,
    ts          TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- A person's groups as of their last sign-in through the identity
-- provider, valid until that sign-in's absolute timeout: what a Slack click
-- (where the IdP is not asked) may count as approver groups. Ending all of
-- a person's sessions deletes it.
CREATE TABLE sign_ins (
    user_name     TEXT PRIMARY KEY,
    groups        TEXT NOT NULL,           -- JSON array
    signed_in_at  BIGINT NOT NULL,
    valid_until   BIGINT NOT NULL
);
