-- Approvers' answers to grants that wait for approval: one per approver and
-- grant (the key refuses a second), written with the grant's transition and
-- its audit event in one transaction.

CREATE TABLE grant_reviews (
    grant_id  TEXT NOT NULL REFERENCES grants (id),
    approver  TEXT NOT NULL,
    verdict   TEXT NOT NULL,
    comment   TEXT NOT NULL,
    at        BIGINT NOT NULL,
    PRIMARY KEY (grant_id, approver),
    CHECK (verdict IN ('approve', 'deny'))
);
