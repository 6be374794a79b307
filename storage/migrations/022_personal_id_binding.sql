-- Identity codes are sealed bound to their customer's id (storage.crypto.PERSONAL_ID_FORMAT
-- marks such a code). Codes sealed before that are found through this index and sealed again
-- when the service starts (storage.customers.reseal_personal_ids); once none is left, it is
-- empty.

CREATE INDEX customers_personal_id_unbound ON customers (id)
    WHERE personal_id_enc IS NOT NULL
      AND substring(personal_id_enc FROM 1 FOR 4) <> '\x50494432'::bytea;
