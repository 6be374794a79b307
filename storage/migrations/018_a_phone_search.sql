-- Search by telephone number: caller and callee in E.164 form beside the numbers as pushed.
--
-- New rows get them from schemas.phone.to_e164 (libphonenumber) at ingest. Rows already
-- stored are back-filled here by the same rule for the forms a Finnish PBX writes: "+358…"
-- kept, "00…" as "+…", a national "0…" as "+358…", spaces, dashes, dots and brackets
-- dropped; anything else (an extension, "anonymous") stays NULL.

CREATE FUNCTION pg_temp.e164_guess(number text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN d ~ '^\+[1-9][0-9]{6,14}$' THEN d
        WHEN d ~ '^00[1-9][0-9]{6,14}$' THEN '+' || substr(d, 3)
        WHEN d ~ '^0[1-9][0-9]{4,11}$' THEN '+358' || substr(d, 2)
    END
    FROM (SELECT regexp_replace(coalesce(number, ''), '[\s().-]', '', 'g') AS d) s
$$;

ALTER TABLE recordings ADD COLUMN caller_e164 text, ADD COLUMN callee_e164 text;

UPDATE recordings SET caller_e164 = pg_temp.e164_guess(caller),
                      callee_e164 = pg_temp.e164_guess(callee)
 WHERE caller IS NOT NULL OR callee IS NOT NULL;

-- Led by company like every search index (migration 012); a number's calls are few, so
-- the two index ranges are merged and sorted.
CREATE INDEX recordings_search_caller
    ON recordings (company_id, caller_e164, started_at DESC, id DESC)
    WHERE state <> 'pending' AND caller_e164 IS NOT NULL;
CREATE INDEX recordings_search_callee
    ON recordings (company_id, callee_e164, started_at DESC, id DESC)
    WHERE state <> 'pending' AND callee_e164 IS NOT NULL;
