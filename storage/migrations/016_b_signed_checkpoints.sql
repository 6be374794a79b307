-- Signed audit checkpoints in a bucket of their own. The chain has an epoch: a restore
-- starts a new one with a signed checkpoint of the restored head. Checkpoints written
-- before signing (epoch NULL, unsigned objects in the audio bucket) are no longer checked.

ALTER TABLE audit_head ADD COLUMN epoch integer NOT NULL DEFAULT 1 CHECK (epoch > 0);

ALTER TABLE audit_checkpoints ADD COLUMN epoch integer CHECK (epoch > 0);
ALTER TABLE audit_checkpoints DROP CONSTRAINT audit_checkpoints_pkey;
ALTER TABLE audit_checkpoints ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
CREATE UNIQUE INDEX audit_checkpoints_epoch_seq ON audit_checkpoints (epoch, seq);
