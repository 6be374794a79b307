#!/bin/sh
# Run once by the postgres image on a new data directory (docker-entrypoint-initdb.d), as its
# superuser. Creates the two roles tallenne needs and its database:
#   tallenne_owner    owns the database and schema; `tallenne migrate` connects as it
#   tallenne_runtime  group role that the migrations grant the service's privileges to
#   tallenne          the service's login role: owns nothing, no superuser, no BYPASSRLS
# Passwords come from POSTGRES_OWNER_PASSWORD and POSTGRES_APP_PASSWORD (compose.yaml; on
# Kubernetes the postgres-secrets Secret, k8s/postgres.yaml).
set -eu
: "${POSTGRES_OWNER_PASSWORD:?set POSTGRES_OWNER_PASSWORD}"
: "${POSTGRES_APP_PASSWORD:?set POSTGRES_APP_PASSWORD}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v owner_password="$POSTGRES_OWNER_PASSWORD" -v app_password="$POSTGRES_APP_PASSWORD" <<'SQL'
CREATE ROLE tallenne_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE tallenne_runtime NOLOGIN;
CREATE ROLE tallenne LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
    PASSWORD :'app_password' IN ROLE tallenne_runtime;
CREATE DATABASE tallenne OWNER tallenne_owner;
SQL
