-- Customer history (rectification), prohibitions, web-site events partitioned by month,
-- and the stored first answers of idempotent requests.

-- Every change of a customer record. Old values are sealed with the customer's own key
-- (customers.wrapped_key), so erasing that key also shreds the history; only the names of
-- the changed fields are readable.
CREATE TABLE customer_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES customers(id),
    company_id uuid REFERENCES companies(id),
    change text NOT NULL CHECK (change IN ('created', 'updated', 'membership_added',
                                           'membership_moved')),
    changed_fields text[] NOT NULL DEFAULT '{}',
    old_values_enc bytea,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customer_history_customer ON customer_history (customer_id, id);

ALTER TABLE customer_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE customer_history FORCE ROW LEVEL SECURITY;
CREATE POLICY customer_history_read ON customer_history FOR SELECT
    USING (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
           OR EXISTS (SELECT 1 FROM customer_memberships m
                      WHERE m.customer_id = customer_history.customer_id));
CREATE POLICY customer_history_insert ON customer_history FOR INSERT WITH CHECK (true);

CREATE TABLE customer_prohibitions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES customers(id),
    use text NOT NULL CHECK (use IN ('direct_marketing', 'distance_selling',
                                     'other_direct_marketing', 'market_research',
                                     'opinion_polls', 'person_directories', 'genealogy')),
    channel text NOT NULL CHECK (channel IN ('phone', 'email', 'post', 'in_person')),
    received_at timestamptz NOT NULL,
    recorded_by text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    withdrawn_at timestamptz,
    withdrawn_by text
);
-- At most one prohibition of a use in force at a time; withdrawn ones stay as history.
CREATE UNIQUE INDEX customer_prohibitions_in_force
    ON customer_prohibitions (customer_id, use) WHERE withdrawn_at IS NULL;

ALTER TABLE customer_prohibitions ENABLE ROW LEVEL SECURITY;
ALTER TABLE customer_prohibitions FORCE ROW LEVEL SECURITY;
CREATE POLICY customer_prohibitions_scope ON customer_prohibitions
    USING (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
           OR EXISTS (SELECT 1 FROM customer_memberships m
                      WHERE m.customer_id = customer_prohibitions.customer_id));

-- Web-site usage events. Every event belongs to one company (anonymous ones too: the
-- company of the posting token). Partitioned by month; storage.web_events creates the
-- partition of each month it receives (and the next month ahead); the default partition
-- catches anything else so that nothing is lost.
CREATE TABLE web_events (
    id bigint GENERATED ALWAYS AS IDENTITY,
    ts timestamptz NOT NULL,
    company_id uuid NOT NULL REFERENCES companies(id),
    site text NOT NULL,
    event text NOT NULL,
    url text,
    session_id text,
    customer_number text,
    customer_id uuid REFERENCES customers(id),
    ip inet,
    user_agent text,
    referrer text,
    attributes jsonb NOT NULL DEFAULT '{}'::jsonb,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ts, id)
) PARTITION BY RANGE (ts);
CREATE TABLE web_events_default PARTITION OF web_events DEFAULT;

CREATE INDEX web_events_ts ON web_events (ts DESC, id DESC);
CREATE INDEX web_events_customer ON web_events (customer_id, ts DESC, id DESC)
    WHERE customer_id IS NOT NULL;
CREATE INDEX web_events_site ON web_events (site, ts DESC, id DESC);
-- Late linking: events that carried a customer number before the customer record came.
CREATE INDEX web_events_customer_number ON web_events (company_id, customer_number)
    WHERE customer_number IS NOT NULL;

ALTER TABLE web_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE web_events FORCE ROW LEVEL SECURITY;
CREATE POLICY web_events_scope ON web_events
    USING (tallenne_in_scope(company_id)) WITH CHECK (tallenne_in_scope(company_id));

-- The first answer to a request carrying an Idempotency-Key, per account (token or user).
CREATE TABLE idempotency_keys (
    account_kind text NOT NULL,
    account_id uuid NOT NULL,
    endpoint text NOT NULL,
    key text NOT NULL,
    status integer NOT NULL,
    response jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_kind, account_id, endpoint, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
