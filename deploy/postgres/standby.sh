#!/bin/sh
# The standby: cloned from the primary on first start (pg_basebackup -R writes the
# connection to follow), then a hot standby that replays the primary's WAL as it streams,
# falling back to the archive when the stream has moved on.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pg_basebackup -h "${PRIMARY_HOST:-postgres}" -U replicator -D "$PGDATA" \
        -R -X stream -S standby1 -c fast
fi
exec postgres -c config_file=/etc/postgresql/primary.conf -c "data_directory=$PGDATA"
