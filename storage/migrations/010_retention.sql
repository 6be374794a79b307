-- Retention policies, legal holds and purges (storage limitation).
--
-- A record's expiry is decided in one place, tallenne_retain_until(): the policy of its
-- company, data kind and purpose. Recordings carry it as retain_until (stamped at insert,
-- recomputed when a policy changes); web events and customers have it computed at purge
-- time from their time stamp and their policy (millions of web events are never rewritten).

CREATE TABLE retention_policies (
    company_id uuid NOT NULL REFERENCES companies(id),
    kind text NOT NULL CHECK (kind IN ('recording', 'web_event', 'customer')),
    purpose text NOT NULL,
    keep_days integer NOT NULL CHECK (keep_days > 0 AND keep_days <= 36500),
    updated_by text NOT NULL DEFAULT 'seed',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, kind, purpose)
);

-- Defaults (README.md, Retention, says why): a transaction's evidence for the general
-- limitation period of claims (3 years), quality calls half a year, web-site usage 13 months
-- (a year-on-year comparison), a former customer 3 years after the relationship ended.
INSERT INTO retention_policies (company_id, kind, purpose, keep_days)
SELECT c.id, p.kind, p.purpose, p.keep_days
  FROM companies c
 CROSS JOIN (VALUES ('recording', 'transaction_verification', 1096),
                    ('recording', 'quality', 183),
                    ('web_event', 'site_usage', 396),
                    ('customer', 'customer_relationship', 1096)) AS p(kind, purpose, keep_days);

-- A company added later gets the same defaults.
CREATE FUNCTION retention_policies_for_new_company() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO retention_policies (company_id, kind, purpose, keep_days)
    VALUES (NEW.id, 'recording', 'transaction_verification', 1096),
           (NEW.id, 'recording', 'quality', 183),
           (NEW.id, 'web_event', 'site_usage', 396),
           (NEW.id, 'customer', 'customer_relationship', 1096)
    ON CONFLICT DO NOTHING;
    RETURN NEW;
END
$$;
CREATE TRIGGER retention_policies_for_new_company AFTER INSERT ON companies
    FOR EACH ROW EXECUTE FUNCTION retention_policies_for_new_company();

-- The retention rule: `at` plus the policy's keep_days; NULL (kept) when there is no policy.
CREATE FUNCTION tallenne_keep_days(p_company uuid, p_kind text, p_purpose text)
RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT keep_days FROM retention_policies
     WHERE company_id = p_company AND kind = p_kind AND purpose = p_purpose
$$;

CREATE FUNCTION tallenne_retain_until(p_company uuid, p_kind text, p_purpose text,
                                      p_at timestamptz)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT p_at + make_interval(days => tallenne_keep_days(p_company, p_kind, p_purpose))
$$;

-- A customer is kept while any membership is active; after that, until the latest of: its
-- recordings' retain_until, its web events' expiry, and the customer policy counted from the
-- end of each membership (or from the last change of a customer that never had one).
CREATE FUNCTION tallenne_customer_retain_until(p_customer uuid)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM customer_memberships m
                      WHERE m.customer_id = p_customer AND m.active) THEN 'infinity'::timestamptz
        ELSE greatest(
            (SELECT max(tallenne_retain_until(m.company_id, 'customer', 'customer_relationship',
                                              greatest(m.updated_at, c.updated_at)))
               FROM customer_memberships m WHERE m.customer_id = p_customer),
            (SELECT max(r.retain_until) FROM recordings r
              WHERE r.customer_id = p_customer
                 OR (r.key_owner = 'customer' AND r.key_owner_id = p_customer)),
            (SELECT max(tallenne_retain_until(e.company_id, 'web_event', 'site_usage', e.last))
               FROM (SELECT company_id, max(ts) AS last FROM web_events
                      WHERE customer_id = p_customer GROUP BY company_id) AS e),
            CASE WHEN NOT EXISTS (SELECT 1 FROM customer_memberships m
                                   WHERE m.customer_id = p_customer)
                 THEN c.updated_at + make_interval(days => (SELECT max(keep_days)
                      FROM retention_policies WHERE kind = 'customer')) END)
        END
      FROM customers c WHERE c.id = p_customer
$$;

-- Legal holds: a case covers recordings and/or whole customers (their present and future
-- data). Rows are never deleted; releasing a case stamps released_at on it and its links.
CREATE TABLE legal_holds (
    case_id text PRIMARY KEY CHECK (case_id ~ '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$'),
    reason text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    released_by text,
    released_at timestamptz
);

CREATE TABLE legal_hold_recordings (
    case_id text NOT NULL REFERENCES legal_holds(case_id),
    recording_id uuid NOT NULL,
    company_id uuid NOT NULL REFERENCES companies(id),
    added_at timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz,
    PRIMARY KEY (case_id, recording_id)
);
CREATE INDEX legal_hold_recordings_active ON legal_hold_recordings (recording_id)
    WHERE released_at IS NULL;

CREATE TABLE legal_hold_customers (
    case_id text NOT NULL REFERENCES legal_holds(case_id),
    customer_id uuid NOT NULL REFERENCES customers(id),
    added_at timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz,
    PRIMARY KEY (case_id, customer_id)
);
CREATE INDEX legal_hold_customers_active ON legal_hold_customers (customer_id)
    WHERE released_at IS NULL;

-- recordings.legal_holds mirrors the active cases of the recording and of its customer, so
-- that reading a recording, erasing it and the purge's expiry query need no join. A call
-- stored (or linked to a customer) while the customer is held inherits the customer's cases.
CREATE FUNCTION recordings_retention_stamp() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    inherited text[];
BEGIN
    IF TG_OP = 'INSERT' AND NEW.retain_until IS NULL THEN
        NEW.retain_until := tallenne_retain_until(NEW.company_id, 'recording', NEW.purpose,
                                                  NEW.started_at);
    END IF;
    SELECT coalesce(array_agg(DISTINCT h.case_id ORDER BY h.case_id), '{}') INTO inherited
      FROM legal_hold_customers h
     WHERE h.released_at IS NULL
       AND (h.customer_id = NEW.customer_id
            OR (NEW.key_owner = 'customer' AND h.customer_id = NEW.key_owner_id));
    IF cardinality(inherited) > 0 THEN
        NEW.legal_holds := ARRAY(SELECT DISTINCT unnest(NEW.legal_holds || inherited)
                                 ORDER BY 1);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER recordings_retention_stamp
    BEFORE INSERT OR UPDATE OF customer_id, key_owner_id ON recordings
    FOR EACH ROW EXECUTE FUNCTION recordings_retention_stamp();

-- Existing recordings get their expiry now.
UPDATE recordings
   SET retain_until = tallenne_retain_until(company_id, 'recording', purpose, started_at)
 WHERE retain_until IS NULL;

-- The purge's expiry query walks this index from its oldest end and stops at `now`: live
-- recordings are never read.
CREATE INDEX recordings_retain_until ON recordings (retain_until, id);

-- One purge run (or preview). `as_of` is the time expiry is judged against (injectable).
CREATE TABLE purge_runs (
    id uuid PRIMARY KEY,
    dry_run boolean NOT NULL,
    as_of timestamptz NOT NULL,
    started_by text NOT NULL,
    state text NOT NULL DEFAULT 'running'
        CHECK (state IN ('running', 'finished', 'failed', 'interrupted')),
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    counts jsonb NOT NULL DEFAULT '{}'::jsonb,
    error text
);
CREATE INDEX purge_runs_started ON purge_runs (started_at DESC);

-- Every purged item, once: the primary key is what makes two concurrent purges do the work
-- once between them. No personal data: ids, company, kind, time, reason.
-- item_kind: recording, customer, web_event_partition (a whole month dropped) or
-- web_event_rows (one batch of row deletes; `items` rows).
CREATE TABLE purge_log (
    item_kind text NOT NULL
        CHECK (item_kind IN ('recording', 'customer', 'web_event_partition', 'web_event_rows')),
    item_id text NOT NULL,
    company_id uuid,
    purge_id uuid NOT NULL REFERENCES purge_runs(id),
    purged_at timestamptz NOT NULL DEFAULT now(),
    items bigint NOT NULL DEFAULT 1,
    bytes bigint NOT NULL DEFAULT 0,
    reason text NOT NULL,
    PRIMARY KEY (item_kind, item_id)
);
CREATE INDEX purge_log_run ON purge_log (purge_id);
