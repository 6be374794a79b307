-- The key store: customer and company keys in tables of their own, each key wrapped by a
-- versioned master key (the key-encryption key), so that the master key can be rotated.
-- `tallenne backup` dumps these two tables without their rows; their keys leave the database
-- only in the key snapshot (storage.key_snapshot), which is overwritten, never versioned.

CREATE TABLE customer_keys (
    customer_id uuid PRIMARY KEY REFERENCES customers(id),
    kek_version integer NOT NULL CHECK (kek_version > 0),
    wrapped_key bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO customer_keys (customer_id, kek_version, wrapped_key)
    SELECT id, 1, wrapped_key FROM customers WHERE wrapped_key IS NOT NULL;
ALTER TABLE customers DROP COLUMN wrapped_key;

ALTER TABLE company_keys ADD COLUMN kek_version integer NOT NULL DEFAULT 1
    CHECK (kek_version > 0);
ALTER TABLE company_keys ALTER COLUMN kek_version DROP DEFAULT;

-- A customer's key is seen (and written) through the customer's visible memberships, as
-- the customer row itself is; a company's key only within the company's scope.
ALTER TABLE customer_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE customer_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY customer_keys_scope ON customer_keys
    USING (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
           OR EXISTS (SELECT 1 FROM customer_memberships m
                      WHERE m.customer_id = customer_keys.customer_id))
    WITH CHECK (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
                OR EXISTS (SELECT 1 FROM customer_memberships m
                           WHERE m.customer_id = customer_keys.customer_id));

ALTER TABLE company_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE company_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY company_keys_scope ON company_keys
    USING (tallenne_in_scope(company_id)) WITH CHECK (tallenne_in_scope(company_id));

-- Which change of the key store the key snapshot has caught up with. `due` counts the
-- deletions and re-wraps (erasure, rotation) a snapshot must follow at once; `written` is
-- the `due` the last written snapshot covers (NULL: no snapshot was ever written).
CREATE TABLE key_snapshot_state (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    due bigint NOT NULL DEFAULT 0,
    written bigint,
    written_at timestamptz,
    snapshot_id uuid
);
INSERT INTO key_snapshot_state DEFAULT VALUES;

CREATE FUNCTION tallenne_key_store_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM changed) THEN
        UPDATE key_snapshot_state SET due = due + 1;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER customer_keys_deleted AFTER DELETE ON customer_keys
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION tallenne_key_store_changed();
CREATE TRIGGER customer_keys_rewrapped AFTER UPDATE ON customer_keys
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION tallenne_key_store_changed();
CREATE TRIGGER company_keys_deleted AFTER DELETE ON company_keys
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION tallenne_key_store_changed();
CREATE TRIGGER company_keys_rewrapped AFTER UPDATE ON company_keys
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION tallenne_key_store_changed();

-- Replay's hot path (a new version of 013's): the recording, its company code and its key
-- owner's wrapped key with the master-key version that wraps it, in one self-scoping
-- statement.
DROP FUNCTION tallenne_recording_for_replay(boolean, uuid[], uuid);
CREATE FUNCTION tallenne_recording_for_replay(all_companies boolean, company_ids uuid[],
                                              wanted uuid)
RETURNS TABLE (recording recordings, company text, owner_kek_version integer,
               owner_wrapped_key bytea)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM tallenne_set_scope(all_companies, company_ids);
    RETURN QUERY
        SELECT r, c.code, k.kek_version, k.wrapped_key
        FROM recordings r JOIN companies c ON c.id = r.company_id
        LEFT JOIN LATERAL (
            SELECT ck.kek_version, ck.wrapped_key FROM company_keys ck
             WHERE r.key_owner = 'company' AND ck.company_id = r.key_owner_id
            UNION ALL
            SELECT cu.kek_version, cu.wrapped_key FROM customer_keys cu
             WHERE r.key_owner = 'customer' AND cu.customer_id = r.key_owner_id
        ) k ON true
        WHERE r.id = wanted AND r.state <> 'pending';
END
$$;
