-- When each person's sessions were last all ended ("sign out everywhere",
-- the SOC's "end all sessions"): an ID token issued before then is refused
-- as a bearer token, though its own expiry has not come.
CREATE TABLE sessions_ended (
    user_name TEXT PRIMARY KEY,
    ended_at  BIGINT NOT NULL
);
