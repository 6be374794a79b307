-- Data-subject rights: access requests, the disclosure log and the erasure ledger.

-- One verified request of a customer to see what is held about them (right of access).
CREATE TABLE access_requests (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id uuid NOT NULL REFERENCES customers(id),
    verified_by text NOT NULL
        CHECK (verified_by IN ('in_person', 'signed_letter', 'strong_electronic_id')),
    requested_by text NOT NULL,     -- the user or token that took the request
    received_at timestamptz NOT NULL,
    due_at timestamptz NOT NULL,    -- the statutory deadline: one month from receipt
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX access_requests_customer ON access_requests (customer_id, received_at DESC);

ALTER TABLE access_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE access_requests FORCE ROW LEVEL SECURITY;
CREATE POLICY access_requests_read ON access_requests FOR SELECT
    USING (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
           OR EXISTS (SELECT 1 FROM customer_memberships m
                      WHERE m.customer_id = access_requests.customer_id));
CREATE POLICY access_requests_insert ON access_requests FOR INSERT WITH CHECK (true);

-- Every disclosure of customer data to a recipient outside the register.
CREATE TABLE disclosures (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id uuid NOT NULL REFERENCES companies(id),
    disclosed_by text NOT NULL,
    recipient text NOT NULL,
    recipient_country text NOT NULL,
    purpose text NOT NULL CHECK (purpose IN ('marketing_register', 'distance_selling',
                                             'market_research', 'opinion_polls',
                                             'subcontractor', 'debt_collection')),
    legal_basis text NOT NULL,
    fields text[] NOT NULL,
    customer_ids uuid[] NOT NULL,
    customer_count integer NOT NULL,
    disclosed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX disclosures_disclosed ON disclosures (disclosed_at DESC, id DESC);
CREATE INDEX disclosures_customers ON disclosures USING gin (customer_ids);

ALTER TABLE disclosures ENABLE ROW LEVEL SECURITY;
ALTER TABLE disclosures FORCE ROW LEVEL SECURITY;
CREATE POLICY disclosures_scope ON disclosures
    USING (tallenne_in_scope(company_id)) WITH CHECK (tallenne_in_scope(company_id));

-- Erased customers: ids and times only, never personal data. `tallenne restore` re-applies
-- every entry so that a restored backup never brings an erased person back.
CREATE TABLE erasure_ledger (
    customer_id uuid PRIMARY KEY,
    erased_at timestamptz NOT NULL DEFAULT now(),
    company_ids uuid[] NOT NULL DEFAULT '{}',
    recording_ids uuid[] NOT NULL DEFAULT '{}'
);
-- Only all-company work (erasure, restore) touches the ledger.
ALTER TABLE erasure_ledger ENABLE ROW LEVEL SECURITY;
ALTER TABLE erasure_ledger FORCE ROW LEVEL SECURITY;
CREATE POLICY erasure_ledger_all_companies ON erasure_ledger
    USING (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on')
    WITH CHECK (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on');

-- Erasure blanks the sealed old values of a customer's history (005 allows only reading and
-- inserting history rows).
CREATE POLICY customer_history_erase ON customer_history FOR UPDATE
    USING (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on');
