-- Customers (one per person, matched by identity code) and their memberships per company.
-- Row-level security: a caller sees a membership only in its companies, and a customer only
-- through a membership it can see.

CREATE TABLE customers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    personal_id_enc bytea,
    personal_id_hash bytea UNIQUE,
    name text,
    address jsonb NOT NULL DEFAULT '{}'::jsonb,
    email text,
    phone text,
    wrapped_key bytea,           -- the customer's key, wrapped by the master key
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    erased_at timestamptz
);

CREATE TABLE customer_memberships (
    customer_id uuid NOT NULL REFERENCES customers(id),
    company_id uuid NOT NULL REFERENCES companies(id),
    customer_number text NOT NULL,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, company_id),
    UNIQUE (company_id, customer_number)
);

-- Key per company for data with no known customer (wrapped by the master key).
CREATE TABLE company_keys (
    company_id uuid PRIMARY KEY REFERENCES companies(id),
    wrapped_key bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE customer_memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE customer_memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY customer_memberships_scope ON customer_memberships
    USING (tallenne_in_scope(company_id)) WITH CHECK (tallenne_in_scope(company_id));

ALTER TABLE customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE customers FORCE ROW LEVEL SECURITY;
-- Reading needs a visible membership; inserting is allowed so that a new customer can be
-- created before its first membership row (the membership insert is checked by its policy).
CREATE POLICY customers_read ON customers FOR SELECT
    USING (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
           OR EXISTS (SELECT 1 FROM customer_memberships m WHERE m.customer_id = customers.id));
CREATE POLICY customers_insert ON customers FOR INSERT WITH CHECK (true);
CREATE POLICY customers_update ON customers FOR UPDATE
    USING (coalesce(current_setting('tallenne.all_companies', true), 'off') = 'on'
           OR EXISTS (SELECT 1 FROM customer_memberships m WHERE m.customer_id = customers.id));
