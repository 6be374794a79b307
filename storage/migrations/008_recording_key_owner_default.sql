-- Rows written without key_owner_id (older writers, test factories) get the owner that
-- key_owner implies at insert time.

CREATE FUNCTION recordings_default_key_owner() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.key_owner_id IS NULL THEN
        NEW.key_owner_id := CASE WHEN NEW.key_owner = 'customer' THEN NEW.customer_id
                                 ELSE NEW.company_id END;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER recordings_default_key_owner BEFORE INSERT ON recordings
    FOR EACH ROW EXECUTE FUNCTION recordings_default_key_owner();
