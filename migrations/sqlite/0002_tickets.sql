-- Change tickets as the authority: where a grant came from, the policy
-- decision with every reason, the ServiceNow snapshot it was decided on, and
-- the webhook replay guard.

ALTER TABLE grants ADD COLUMN origin TEXT NOT NULL DEFAULT 'api';
ALTER TABLE grants ADD COLUMN decision TEXT;          -- JSON: jit_domain::Decision
ALTER TABLE grants ADD COLUMN ticket_snapshot TEXT;   -- JSON: jit_domain::ChangeTicket

-- One live webhook-made grant per change, user and role: a repeated or
-- concurrent delivery of the same change cannot create a second one.
CREATE UNIQUE INDEX grants_one_live_per_change ON grants (ticket, user_name, role)
    WHERE origin = 'servicenow' AND state IN ('pending_approval', 'approved', 'active');

CREATE TABLE webhook_deliveries (
    delivery_id TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL,
    ticket      TEXT,
    answer      TEXT NOT NULL                     -- JSON: what the sender was told
);
