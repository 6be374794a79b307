-- The group's web sites and the company each belongs to. A web event whose line names no
-- company takes its site's company (service/web_events.py applies the rule). A site is the
-- text shippers put in `site` (a host name or an OpenTelemetry service.name), compared
-- exactly. Not personal data and readable by every scope, like `companies`.
CREATE TABLE web_sites (
    site text PRIMARY KEY CHECK (length(site) BETWEEN 1 AND 200),
    company_id uuid NOT NULL REFERENCES companies(id),
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX web_sites_company ON web_sites (company_id);
