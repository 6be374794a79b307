-- Evaluation forms: the criteria a call is scored on (each 0..max_score) plus a comment,
-- defined by admins. A form's name is the stable key that evaluations carry in `form`.
--
-- Forms are versioned: changing a form's criteria writes a new version, and an evaluation
-- records the version it was scored with, so an edit never reinterprets old scores. Forms are
-- never deleted; a form no longer wanted is deactivated and stays readable for history.
--
-- company_id NULL is a group-wide form usable for every company's calls; otherwise the form
-- belongs to that company only. Everyone sees group-wide forms and their companies' forms;
-- writing a group-wide form needs the all-companies scope (tallenne_in_scope(NULL) is true
-- only there).

CREATE TABLE evaluation_forms (
    name text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    company_id uuid REFERENCES companies(id),
    title text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description text CHECK (length(description) <= 2000),
    -- The current version: the one new evaluations are scored with.
    version integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    active boolean NOT NULL DEFAULT true,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX evaluation_forms_company ON evaluation_forms (company_id);

-- criteria: an ordered array of {"key", "label", "max_score"} (schemas/evaluation_forms.py
-- holds the rules of a criterion). company_id repeats the form's, for row-level security.
CREATE TABLE evaluation_form_versions (
    form text NOT NULL REFERENCES evaluation_forms(name),
    version integer NOT NULL CHECK (version >= 1),
    company_id uuid REFERENCES companies(id),
    criteria jsonb NOT NULL CHECK (jsonb_typeof(criteria) = 'array'
                                   AND jsonb_array_length(criteria) BETWEEN 1 AND 50),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (form, version)
);

-- NULL for evaluations stored before forms existed (their form was free text).
ALTER TABLE recording_evaluations ADD COLUMN form_version integer;
ALTER TABLE recording_evaluations ADD CONSTRAINT recording_evaluations_form_version
    FOREIGN KEY (form, form_version) REFERENCES evaluation_form_versions (form, version);

ALTER TABLE evaluation_forms ENABLE ROW LEVEL SECURITY;
ALTER TABLE evaluation_forms FORCE ROW LEVEL SECURITY;
CREATE POLICY evaluation_forms_read ON evaluation_forms FOR SELECT
    USING (company_id IS NULL OR tallenne_in_scope(company_id));
CREATE POLICY evaluation_forms_insert ON evaluation_forms FOR INSERT
    WITH CHECK (tallenne_in_scope(company_id));
CREATE POLICY evaluation_forms_update ON evaluation_forms FOR UPDATE
    USING (tallenne_in_scope(company_id)) WITH CHECK (tallenne_in_scope(company_id));

ALTER TABLE evaluation_form_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE evaluation_form_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY evaluation_form_versions_read ON evaluation_form_versions FOR SELECT
    USING (company_id IS NULL OR tallenne_in_scope(company_id));
CREATE POLICY evaluation_form_versions_insert ON evaluation_form_versions FOR INSERT
    WITH CHECK (tallenne_in_scope(company_id));

-- The seed and the back-fill below act for the whole group.
SELECT set_config('tallenne.all_companies', 'on', true);

-- The form the call page has offered so far (name "perus", four criteria scored 0-5).
INSERT INTO evaluation_forms (name, title, description, created_by, updated_by)
VALUES ('perus', 'Perusarviointi',
        'Puhelun laadun perusarviointi: tervehdys, tunnistaminen, ratkaisu ja kohteliaisuus.',
        'seed', 'seed');
INSERT INTO evaluation_form_versions (form, version, criteria, created_by)
VALUES ('perus', 1, '[
    {"key": "greeting", "label": "Tervehdys", "max_score": 5},
    {"key": "identification", "label": "Tunnistaminen", "max_score": 5},
    {"key": "solution", "label": "Ratkaisu", "max_score": 5},
    {"key": "courtesy", "label": "Kohteliaisuus", "max_score": 5}
]', 'seed');

-- Evaluations the call page stored with that form and that fit it belong to its version 1;
-- others keep a NULL version (scored on a free-form form).
UPDATE recording_evaluations e
   SET form_version = 1
 WHERE e.form = 'perus'
   AND jsonb_typeof(e.scores) = 'object'
   AND (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(e.scores) AS k)
       = ARRAY['courtesy', 'greeting', 'identification', 'solution']
   AND NOT EXISTS (SELECT 1 FROM jsonb_each(e.scores) AS s
                    WHERE jsonb_typeof(s.value) <> 'number'
                       OR (s.value)::numeric NOT BETWEEN 0 AND 5);
