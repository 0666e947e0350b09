-- One canonical form for user names (`UserName::parse`: ASCII letters
-- lowered): every comparison, key, lock and row uses it. Rows written
-- before are rewritten to it. Where two rows become one (`BOB@…` and `bob@…`
-- answering the same request, two sign-ins of one person), the earliest is
-- kept and the spellings are recorded in `user_name_collisions`; the broker
-- reports each to the SOC at its next start (audit `user_names_collided`),
-- so nothing is merged silently. The audit log is never rewritten: its
-- hashes cover the names as they were.

-- PostgreSQL's lower() follows the locale; the canonical form lowers ASCII
-- letters only, as SQLite's lower() and `UserName::parse` do.
CREATE FUNCTION pg_temp.ascii_lower(t TEXT) RETURNS TEXT
    AS $$ SELECT translate(t, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') $$
    LANGUAGE SQL IMMUTABLE;

CREATE TABLE user_name_collisions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name  TEXT NOT NULL,
    shared      TEXT NOT NULL,          -- what the rows share besides the name (a grant id, …)
    names       TEXT NOT NULL,          -- the spellings that became one
    found_at    BIGINT NOT NULL,
    reported_at BIGINT
);

-- Answers to a grant's request: one per approver.
INSERT INTO user_name_collisions (table_name, shared, names, found_at)
    SELECT 'grant_reviews', grant_id, string_agg(approver, ', '), CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)
    FROM grant_reviews GROUP BY grant_id, pg_temp.ascii_lower(approver) HAVING COUNT(*) > 1;
DELETE FROM grant_reviews WHERE EXISTS (
    SELECT 1 FROM grant_reviews r
    WHERE r.grant_id = grant_reviews.grant_id AND pg_temp.ascii_lower(r.approver) = pg_temp.ascii_lower(grant_reviews.approver)
      AND (r.at < grant_reviews.at OR (r.at = grant_reviews.at AND r.approver < grant_reviews.approver)));
UPDATE grant_reviews SET approver = pg_temp.ascii_lower(approver) WHERE approver <> pg_temp.ascii_lower(approver);

-- Answers to an extension request: one per approver.
INSERT INTO user_name_collisions (table_name, shared, names, found_at)
    SELECT 'extension_reviews', extension_id, string_agg(approver, ', '), CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)
    FROM extension_reviews GROUP BY extension_id, pg_temp.ascii_lower(approver) HAVING COUNT(*) > 1;
DELETE FROM extension_reviews WHERE EXISTS (
    SELECT 1 FROM extension_reviews r
    WHERE r.extension_id = extension_reviews.extension_id AND pg_temp.ascii_lower(r.approver) = pg_temp.ascii_lower(extension_reviews.approver)
      AND (r.at < extension_reviews.at OR (r.at = extension_reviews.at AND r.approver < extension_reviews.approver)));
UPDATE extension_reviews SET approver = pg_temp.ascii_lower(approver) WHERE approver <> pg_temp.ascii_lower(approver);

-- A person's last sign-in: the newest is kept.
INSERT INTO user_name_collisions (table_name, shared, names, found_at)
    SELECT 'sign_ins', pg_temp.ascii_lower(user_name), string_agg(user_name, ', '), CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)
    FROM sign_ins GROUP BY pg_temp.ascii_lower(user_name) HAVING COUNT(*) > 1;
DELETE FROM sign_ins WHERE EXISTS (
    SELECT 1 FROM sign_ins s
    WHERE pg_temp.ascii_lower(s.user_name) = pg_temp.ascii_lower(sign_ins.user_name)
      AND (s.signed_in_at > sign_ins.signed_in_at OR (s.signed_in_at = sign_ins.signed_in_at AND s.user_name < sign_ins.user_name)));
UPDATE sign_ins SET user_name = pg_temp.ascii_lower(user_name) WHERE user_name <> pg_temp.ascii_lower(user_name);

-- A break-glass account's newest login: the newest is kept.
INSERT INTO user_name_collisions (table_name, shared, names, found_at)
    SELECT 'break_glass_logins', pg_temp.ascii_lower(user_name), string_agg(user_name, ', '), CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)
    FROM break_glass_logins GROUP BY pg_temp.ascii_lower(user_name) HAVING COUNT(*) > 1;
DELETE FROM break_glass_logins WHERE EXISTS (
    SELECT 1 FROM break_glass_logins b
    WHERE pg_temp.ascii_lower(b.user_name) = pg_temp.ascii_lower(break_glass_logins.user_name)
      AND (COALESCE(b.last_login_at, 0) > COALESCE(break_glass_logins.last_login_at, 0)
           OR (COALESCE(b.last_login_at, 0) = COALESCE(break_glass_logins.last_login_at, 0) AND b.user_name < break_glass_logins.user_name)));
UPDATE break_glass_logins SET user_name = pg_temp.ascii_lower(user_name) WHERE user_name <> pg_temp.ascii_lower(user_name);

-- Grants: a live webhook-made grant is one per change, user and role. Two
-- that would become one stay as they are, recorded (the SOC decides).
INSERT INTO user_name_collisions (table_name, shared, names, found_at)
    SELECT 'grants', COALESCE(ticket, '') || ' ' || role, string_agg(user_name, ', '), CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)
    FROM grants WHERE origin = 'servicenow' AND state IN ('pending_approval', 'approved', 'active')
    GROUP BY ticket, pg_temp.ascii_lower(user_name), role HAVING COUNT(*) > 1;
UPDATE grants SET user_name = pg_temp.ascii_lower(user_name) WHERE user_name <> pg_temp.ascii_lower(user_name) AND NOT EXISTS (
    SELECT 1 FROM grants g
    WHERE g.id <> grants.id AND g.origin = 'servicenow' AND grants.origin = 'servicenow'
      AND g.state IN ('pending_approval', 'approved', 'active') AND grants.state IN ('pending_approval', 'approved', 'active')
      AND g.ticket = grants.ticket AND g.role = grants.role AND pg_temp.ascii_lower(g.user_name) = pg_temp.ascii_lower(grants.user_name));

-- The rest has no key on the name.
UPDATE jobs SET user_name = pg_temp.ascii_lower(user_name) WHERE user_name <> pg_temp.ascii_lower(user_name);
UPDATE reconcile_findings SET user_name = pg_temp.ascii_lower(user_name) WHERE user_name <> pg_temp.ascii_lower(user_name);
UPDATE web_sessions SET user_name = pg_temp.ascii_lower(user_name) WHERE user_name <> pg_temp.ascii_lower(user_name);
UPDATE activity_passes SET user_name = pg_temp.ascii_lower(user_name) WHERE user_name <> pg_temp.ascii_lower(user_name);
