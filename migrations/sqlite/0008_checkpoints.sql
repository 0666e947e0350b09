-- Signed checkpoints of the audit chain's head: a tail cut off or rewritten
-- after one no longer matches the hash it signed.
CREATE TABLE audit_checkpoints (
    seq        BIGINT PRIMARY KEY,       -- the head that was signed
    hash       TEXT NOT NULL,            -- its hash
    at         BIGINT NOT NULL,
    key_id     TEXT NOT NULL,            -- the public key, hex
    signature  TEXT NOT NULL             -- ed25519 over "jit-broker audit checkpoint\n<seq>\n<hash>\n", hex
);
