-- The service runs as a login role that owns nothing; its privileges come from the group role
-- tallenne_runtime, granted here by the owner (the role that runs the migrations). The
-- runtime role may read and write the data tables, but only append to and read the audit
-- trail, and it can never alter a table, its row-level security or its triggers.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tallenne_runtime') THEN
        BEGIN
            CREATE ROLE tallenne_runtime NOLOGIN NOSUPERUSER NOBYPASSRLS;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'the group role tallenne_runtime does not exist and the owner '
                'role may not create it: CREATE ROLE tallenne_runtime NOLOGIN as a superuser, '
                'then GRANT tallenne_runtime TO the service''s login role'
                USING ERRCODE = 'insufficient_privilege';
        END;
    END IF;
END
$$;

-- Web-event partitions are made and dropped by the owner on the runtime role's behalf: DDL
-- on `web_events` needs its owner, and a partition name is checked before it is dropped.
CREATE FUNCTION tallenne_create_web_events_partition(p_name text, p_from date, p_to date)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF p_name !~ '^web_events_[0-9]{4}_[0-9]{2}$' THEN
        RAISE EXCEPTION 'not a web-event partition name: %', p_name;
    END IF;
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF web_events'
                   ' FOR VALUES FROM (%L) TO (%L)', p_name, p_from, p_to);
END
$$;

CREATE FUNCTION tallenne_drop_web_events_partition(p_name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF p_name !~ '^web_events_[0-9]{4}_[0-9]{2}$' OR NOT EXISTS (
        SELECT 1 FROM pg_inherits i
        WHERE i.inhrelid = to_regclass('public.' || p_name)
          AND i.inhparent = 'public.web_events'::regclass) THEN
        RAISE EXCEPTION 'not a web-event partition: %', p_name;
    END IF;
    EXECUTE format('DROP TABLE %I', p_name);
END
$$;

-- Every grant of the runtime role, in one function: migrations call it, and a restore (whose
-- dump carries no privileges) calls it again.
CREATE FUNCTION tallenne_grant_runtime() RETURNS void
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
    -- The migration record and the grant functions are the owner's.
    REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON schema_migrations FROM tallenne_runtime;
    REVOKE EXECUTE ON FUNCTION tallenne_grant_runtime() FROM tallenne_runtime, PUBLIC;
    REVOKE EXECUTE ON FUNCTION tallenne_create_web_events_partition(text, date, date),
        tallenne_drop_web_events_partition(text) FROM PUBLIC;
END
$$;

SELECT tallenne_grant_runtime();
