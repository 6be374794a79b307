#!/bin/sh
# First start of the first primary (docker-entrypoint-initdb.d, after the roles script): the
# replication login, replication connections allowed from the network (scram-sha-256 only),
# and, last, synchronous commit. ALTER SYSTEM writes postgresql.auto.conf, which the real
# server reads when the image starts it after this script; the temporary server running the
# init scripts keeps committing without a standby. A cloned standby inherits all three.
set -eu
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres \
    -v password="$POSTGRES_REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres \
    -c "ALTER SYSTEM SET synchronous_standby_names = '*'"
