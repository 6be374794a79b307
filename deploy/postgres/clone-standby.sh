#!/bin/sh
# Before PostgreSQL starts on any server (compose: start.sh; Kubernetes: the clone-standby
# init container), as the postgres user. SERVERS names every server (host names, spaces
# between), SELF this one, INITIAL_PRIMARY the one that initialises a new cluster.
#   empty data directory, a peer is the primary (pg_is_in_recovery() false):
#       clone it (pg_basebackup -R): this server becomes its streaming standby;
#   empty, no primary answers but a peer exists (answers, or its name resolves):
#       refuse (exit 1, retried): a new cluster beside the old one would be a second primary;
#   empty and no peer at all: only INITIAL_PRIMARY goes on, and the image runs initdb;
#   the data directory of a primary (no standby.signal) while a peer is the primary:
#       refuse: a former primary must be rebuilt (its volume emptied) or pg_rewind-ed first.
set -eu
: "${SERVERS:?}" "${SELF:?}" "${INITIAL_PRIMARY:?}" "${PGDATA:?}"
export PGPASSWORD="${POSTGRES_REPLICATION_PASSWORD:?}"
primary=""
present=""
for server in $SERVERS; do
    case "$server" in "$SELF" | "$SELF".*) continue ;; esac
    state=$(psql "host=$server user=replicator dbname=postgres connect_timeout=5" \
        -XAtc "SELECT pg_is_in_recovery()" 2>/dev/null || true)
    if [ "$state" = f ]; then
        primary=$server
    elif [ "$state" = t ] || getent ahosts "$server" >/dev/null 2>&1; then
        present=$server
    fi
done
if [ -s "$PGDATA/PG_VERSION" ]; then
    if [ -n "$primary" ] && [ ! -f "$PGDATA/standby.signal" ]; then
        echo "$SELF holds a primary's data but $primary is the primary: rebuild $SELF" \
             "(empty its data volume) or pg_rewind it; not starting a second primary" >&2
        exit 1
    fi
    exit 0
fi
if [ -n "$primary" ]; then
    echo "cloning $SELF from the primary $primary"
    exec pg_basebackup -h "$primary" -U replicator -D "$PGDATA" -R -X stream -c fast
fi
if [ -n "$present" ]; then
    echo "no primary answers, but $present exists: not initialising a new cluster" >&2
    exit 1
fi
if [ "$SELF" != "$INITIAL_PRIMARY" ]; then
    echo "no primary to clone $SELF from yet" >&2
    exit 1
fi
echo "$SELF is alone: the image initialises a new cluster"
