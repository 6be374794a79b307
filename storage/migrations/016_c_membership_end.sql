-- Memberships end. `ended_at` is when the customer relationship with the company ended (set
-- through the customer API, or at once when the customer number passes to another person);
-- an ended membership keeps its number for the record, and only a current membership holds
-- the number for new calls and web events. Customer retention counts from the end of the
-- last membership.

ALTER TABLE customer_memberships ADD COLUMN ended_at timestamptz;
UPDATE customer_memberships SET ended_at = updated_at WHERE NOT active;
ALTER TABLE customer_memberships DROP CONSTRAINT customer_memberships_company_id_customer_number_key;
CREATE UNIQUE INDEX customer_memberships_current_number
    ON customer_memberships (company_id, customer_number) WHERE ended_at IS NULL;
CREATE INDEX customer_memberships_number ON customer_memberships (company_id, customer_number);

CREATE OR REPLACE FUNCTION tallenne_membership_current(p_ended_at timestamptz)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT p_ended_at IS NULL OR p_ended_at > now()
$$;

-- A customer is kept while any membership is current; after that, until the latest of: its
-- recordings' retain_until, its web events' expiry, and the customer policy counted from the
-- end of each membership (or from the last change of a customer that never had one).
CREATE OR REPLACE FUNCTION tallenne_customer_retain_until(p_customer uuid)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM customer_memberships m
                      WHERE m.customer_id = p_customer
                        AND tallenne_membership_current(m.ended_at)) THEN 'infinity'::timestamptz
        ELSE greatest(
            (SELECT max(tallenne_retain_until(m.company_id, 'customer', 'customer_relationship',
                                              m.ended_at))
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

ALTER TABLE customer_history DROP CONSTRAINT customer_history_change_check;
ALTER TABLE customer_history ADD CONSTRAINT customer_history_change_check
    CHECK (change IN ('created', 'updated', 'membership_added', 'membership_moved',
                      'number_passed_on', 'membership_ended', 'membership_resumed'));
