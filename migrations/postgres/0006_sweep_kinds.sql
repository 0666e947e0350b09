-- Sweeps come in two kinds: `holders` asks the directory who holds each
-- privileged role (every minute); `deep` lists every user (daily). Runs
-- recorded before this were all deep.
ALTER TABLE reconcile_runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'deep'
    CHECK (kind IN ('holders', 'deep'));
CREATE INDEX reconcile_runs_by_kind ON reconcile_runs (kind, id);
