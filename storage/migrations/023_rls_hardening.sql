-- Row-level security where the application's SQL was the only guard: web-event partitions,
-- the partition drop, the customer key and prohibitions, inserts that named another company's
-- customer or form, other companies' history rows of a shared customer, and write grants on
-- records that are only ever appended to.

-- 1. Web-event partitions. A query on `web_events` is checked by the parent's policy only;
-- a partition named directly is checked by its own, so each partition gets the parent's.
CREATE FUNCTION tallenne_secure_web_events_partition(p_partition regclass) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_partition);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_partition);
    IF NOT EXISTS (SELECT 1 FROM pg_policy
                    WHERE polrelid = p_partition AND polname = 'web_events_scope') THEN
        EXECUTE format('CREATE POLICY web_events_scope ON %s'
                       ' USING (tallenne_in_scope(company_id))'
                       ' WITH CHECK (tallenne_in_scope(company_id))', p_partition);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION tallenne_create_web_events_partition(p_name text, p_from date,
                                                                p_to date)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF p_name !~ '^web_events_[0-9]{4}_[0-9]{2}$' THEN
        RAISE EXCEPTION 'not a web-event partition name: %', p_name;
    END IF;
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF web_events'
                   ' FOR VALUES FROM (%L) TO (%L)', p_name, p_from, p_to);
    PERFORM tallenne_secure_web_events_partition(('public.' || quote_ident(p_name))::regclass);
END
$$;

SELECT tallenne_secure_web_events_partition(i.inhrelid::regclass)
  FROM pg_inherits i WHERE i.inhparent = 'public.web_events'::regclass;

-- 2. A partition holds a month of every company's events: dropping it is all-companies work
-- (the purge), never a single company's.
CREATE OR REPLACE FUNCTION tallenne_drop_web_events_partition(p_name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF p_name !~ '^web_events_[0-9]{4}_[0-9]{2}$' OR NOT EXISTS (
        SELECT 1 FROM pg_inherits i
        WHERE i.inhrelid = to_regclass('public.' || p_name)
          AND i.inhparent = 'public.web_events'::regclass) THEN
        RAISE EXCEPTION 'not a web-event partition: %', p_name;
    END IF;
    IF coalesce(current_setting('tallenne.all_companies', true), 'off') <> 'on' THEN
        RAISE EXCEPTION 'dropping web-event partition % needs the all-companies scope', p_name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('DROP TABLE %I', p_name);
END
$$;

-- 3. The customer key and the prohibitions are the person's, shared by every company that
-- holds them. A company sees them, adds them (and withdraws a prohibition) through a
-- membership of its own; destroying the key (erasure, across every company), re-wrapping it
-- (`tallenne keys rotate`) and deleting a prohibition need the all-companies scope.
DROP POLICY customer_keys_scope ON customer_keys;
CREATE POLICY customer_keys_read ON customer_keys FOR SELECT
    USING (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
           OR EXISTS (SELECT 1 FROM customer_memberships m
                      WHERE m.customer_id = customer_keys.customer_id));
CREATE POLICY customer_keys_insert ON customer_keys FOR INSERT
    WITH CHECK (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
                OR EXISTS (SELECT 1 FROM customer_memberships m
                           WHERE m.customer_id = customer_keys.customer_id));
CREATE POLICY customer_keys_rewrap ON customer_keys FOR UPDATE
    USING (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on')
    WITH CHECK (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on');
CREATE POLICY customer_keys_destroy ON customer_keys FOR DELETE
    USING (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on');

DROP POLICY customer_prohibitions_scope ON customer_prohibitions;
CREATE POLICY customer_prohibitions_read ON customer_prohibitions FOR SELECT
    USING (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
           OR EXISTS (SELECT 1 FROM customer_memberships m
                      WHERE m.customer_id = customer_prohibitions.customer_id));
CREATE POLICY customer_prohibitions_insert ON customer_prohibitions FOR INSERT
    WITH CHECK (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
                OR EXISTS (SELECT 1 FROM customer_memberships m
                           WHERE m.customer_id = customer_prohibitions.customer_id));
CREATE POLICY customer_prohibitions_withdraw ON customer_prohibitions FOR UPDATE
    USING (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
           OR EXISTS (SELECT 1 FROM customer_memberships m
                      WHERE m.customer_id = customer_prohibitions.customer_id))
    WITH CHECK (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
                OR EXISTS (SELECT 1 FROM customer_memberships m
                           WHERE m.customer_id = customer_prohibitions.customer_id));
CREATE POLICY customer_prohibitions_remove ON customer_prohibitions FOR DELETE
    USING (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on');

-- A membership ties a person to a company, so attaching one is the identity-code match's
-- work (storage.customers._attach_membership, on an all-companies connection): a company that
-- attached itself to another company's customer by id would read them, and every policy
-- above that asks for a visible membership would let it through.
DROP POLICY customer_memberships_scope ON customer_memberships;
CREATE POLICY customer_memberships_read ON customer_memberships FOR SELECT
    USING (tallenne_in_scope(company_id));
CREATE POLICY customer_memberships_attach ON customer_memberships FOR INSERT
    WITH CHECK (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on');
CREATE POLICY customer_memberships_change ON customer_memberships FOR UPDATE
    USING (tallenne_in_scope(company_id)) WITH CHECK (tallenne_in_scope(company_id));
CREATE POLICY customer_memberships_remove ON customer_memberships FOR DELETE
    USING (tallenne_in_scope(company_id));

-- 5 and 6. An access request is taken for a customer the caller sees; a history row is
-- written by a company holding the customer (its membership, ended or not, is visible) and
-- read only by that company, or by anyone who sees the customer when it names none.
DROP POLICY access_requests_insert ON access_requests;
CREATE POLICY access_requests_insert ON access_requests FOR INSERT
    WITH CHECK (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
                OR EXISTS (SELECT 1 FROM customer_memberships m
                           WHERE m.customer_id = access_requests.customer_id));

DROP POLICY customer_history_read ON customer_history;
CREATE POLICY customer_history_read ON customer_history FOR SELECT
    USING (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
           OR (EXISTS (SELECT 1 FROM customer_memberships m
                       WHERE m.customer_id = customer_history.customer_id)
               AND (company_id IS NULL OR tallenne_in_scope(company_id))));
DROP POLICY customer_history_insert ON customer_history;
CREATE POLICY customer_history_insert ON customer_history FOR INSERT
    WITH CHECK (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
                OR EXISTS (SELECT 1 FROM customer_memberships m
                           WHERE m.customer_id = customer_history.customer_id
                             AND m.company_id = customer_history.company_id));

-- A version belongs to its form's company (NULL: a group-wide form, which only an
-- all-companies caller may write, as tallenne_in_scope(NULL) is true only there).
DROP POLICY evaluation_form_versions_insert ON evaluation_form_versions;
CREATE POLICY evaluation_form_versions_insert ON evaluation_form_versions FOR INSERT
    WITH CHECK (tallenne_in_scope(company_id)
                AND company_id IS NOT DISTINCT FROM (
                    SELECT f.company_id FROM evaluation_forms f
                     WHERE f.name = evaluation_form_versions.form));

-- 4. The runtime role's grants (a new version of 015's function, which a restore calls
-- again): records that are only appended to, or stamped once, lose what no code does to them.
CREATE OR REPLACE FUNCTION tallenne_grant_runtime() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    GRANT USAGE ON SCHEMA public TO tallenne_runtime;
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO tallenne_runtime;
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO tallenne_runtime;
    GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO tallenne_runtime;
    -- Tables, sequences and functions that later migrations (and partitions) create.
    ALTER DEFAULT PRIVILEGES IN SCHEMA public
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO tallenne_runtime;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public
        GRANT USAGE, SELECT ON SEQUENCES TO tallenne_runtime;
    -- The audit trail: append and read only, whatever the triggers say.
    REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM tallenne_runtime;
    -- The head row is moved, never added or removed; checkpoints, disclosures, tombstones
    -- and the purge log are inserted only.
    REVOKE INSERT, DELETE ON audit_head FROM tallenne_runtime;
    REVOKE UPDATE, DELETE ON audit_checkpoints, disclosures, recording_tombstones, purge_log
        FROM tallenne_runtime;
    -- Cases and purge runs are released or finished by an update; a ledger entry grows by
    -- one (ON CONFLICT DO UPDATE). None is ever deleted.
    REVOKE DELETE ON legal_holds, legal_hold_recordings, legal_hold_customers, purge_runs,
        erasure_ledger FROM tallenne_runtime;
    -- The migration record and the grant functions are the owner's.
    REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON schema_migrations FROM tallenne_runtime;
    REVOKE EXECUTE ON FUNCTION tallenne_grant_runtime() FROM tallenne_runtime, PUBLIC;
    REVOKE EXECUTE ON FUNCTION tallenne_secure_web_events_partition(regclass)
        FROM tallenne_runtime, PUBLIC;
    REVOKE EXECUTE ON FUNCTION tallenne_create_web_events_partition(text, date, date),
        tallenne_drop_web_events_partition(text) FROM PUBLIC;
END
$$;

SELECT tallenne_grant_runtime();
