-- Work per (user, role), never per grant: a pair has at most one pending
-- job, and work asked of it while one waits joins that job (`wants` counts
-- the joins, so a job that ran while more joined runs again). Removals go
-- first (`lane` 0), and a completed job schedules the pair's next wake.
-- `pair_states` keeps what the broker last proved of each pair, so a job
-- whose pair is where it was last proved costs the directory nothing.

-- Pending jobs of one pair collapse into its earliest.
UPDATE jobs SET status = 'done', finished_at = created_at, last_error = 'joined its pair''s earliest job'
WHERE status = 'pending' AND EXISTS (
    SELECT 1 FROM jobs j
    WHERE j.status = 'pending' AND j.user_name = jobs.user_name AND j.role = jobs.role
      AND (j.next_attempt_at < jobs.next_attempt_at OR (j.next_attempt_at = jobs.next_attempt_at AND j.id < jobs.id)));

ALTER TABLE jobs ADD COLUMN lane INTEGER NOT NULL DEFAULT 0;   -- 0: may remove a role; 1: adds only
ALTER TABLE jobs ADD COLUMN wants BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX jobs_one_pending_per_pair ON jobs (user_name, role) WHERE status = 'pending';
DROP INDEX jobs_due;
CREATE INDEX jobs_due ON jobs (lane, next_attempt_at) WHERE status = 'pending';

CREATE TABLE pair_states (
    user_name    TEXT NOT NULL,
    role         TEXT NOT NULL,
    settled      TEXT,                    -- held | absent | NULL: unknown, or a write under way
    directory_id TEXT,
    at           BIGINT NOT NULL,
    PRIMARY KEY (user_name, role),
    CHECK (settled IN ('held', 'absent'))
);
