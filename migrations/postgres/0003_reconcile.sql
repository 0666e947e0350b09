-- The reconciler: one row per sweep with its counters, every finding, and the
-- lease that lets one sweep run at a time across replicas.

CREATE TABLE reconcile_runs (
    id              TEXT PRIMARY KEY,          -- UUIDv7: sorts by start
    trigger_source  TEXT NOT NULL,             -- cron | cli | api
    dry_run         BOOLEAN NOT NULL,
    status          TEXT NOT NULL,             -- running | completed | failed
    started_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    users_scanned   BIGINT NOT NULL DEFAULT 0,
    pages           BIGINT NOT NULL DEFAULT 0,
    findings        BIGINT NOT NULL DEFAULT 0,
    actions         BIGINT NOT NULL DEFAULT 0, -- roles removed and verified
    errors          BIGINT NOT NULL DEFAULT 0,
    error           TEXT,
    CHECK (status IN ('running', 'completed', 'failed'))
);

CREATE TABLE reconcile_findings (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES reconcile_runs (id),
    at          BIGINT NOT NULL,
    user_name   TEXT NOT NULL,
    role        TEXT NOT NULL,
    kind        TEXT NOT NULL,                 -- standing_privilege | role_accumulation | break_glass_held | conflicting_writer
    action      TEXT NOT NULL,                 -- removed | would_remove | reported | failed
    detail      TEXT NOT NULL
);
CREATE INDEX reconcile_findings_by_run ON reconcile_findings (run_id, id);
CREATE INDEX reconcile_findings_by_pair ON reconcile_findings (user_name, role, action);

-- Named leases: whoever holds an unexpired one may run the thing it names.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    until_at    BIGINT NOT NULL
);
