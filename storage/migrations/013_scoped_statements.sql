-- The company scope as one function, so that a single statement can set its own scope.
-- storage.db.apply_scope calls it at the start of a transaction; in autocommit a function
-- that calls it first scopes just its own statement (the settings are transaction-local).
CREATE FUNCTION tallenne_set_scope(all_companies boolean, company_ids uuid[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('tallenne.all_companies', CASE WHEN all_companies THEN 'on' ELSE 'off' END,
                       true),
            set_config('tallenne.company_ids', company_ids::text, true);
END
$$;

-- Replay's hot path: a recording with its company code and the wrapped key of its key owner,
-- read in the caller's scope in one round trip, without BEGIN and COMMIT of its own.
CREATE FUNCTION tallenne_recording_for_replay(all_companies boolean, company_ids uuid[],
                                              wanted uuid)
RETURNS TABLE (recording recordings, company text, owner_wrapped_key bytea)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM tallenne_set_scope(all_companies, company_ids);
    RETURN QUERY
        SELECT r, c.code, CASE r.key_owner
            WHEN 'company' THEN (SELECT k.wrapped_key FROM company_keys k
                                 WHERE k.company_id = r.key_owner_id)
            ELSE (SELECT cu.wrapped_key FROM customers cu WHERE cu.id = r.key_owner_id)
            END
        FROM recordings r JOIN companies c ON c.id = r.company_id
        WHERE r.id = wanted AND r.state <> 'pending';
END
$$;
