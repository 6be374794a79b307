-- The record whose key wraps a recording's data key, kept apart from customer_id: linking a
-- call to a (different) customer later must not make its data key unreadable.

ALTER TABLE recordings ADD COLUMN key_owner_id uuid;
UPDATE recordings
   SET key_owner_id = CASE WHEN key_owner = 'customer' THEN customer_id ELSE company_id END;
ALTER TABLE recordings ALTER COLUMN key_owner_id SET NOT NULL;
