#!/bin/sh
# A base backup into /basebackups/<UTC time>/ (tar, compressed, with the WAL it needs), then
# the backups beyond the newest KEEP removed and the WAL archive pruned to what the oldest
# one left needs for point-in-time recovery (pg_archivecleanup). Run weekly by
# compose.postgres-ha.yaml's postgres-basebackup service; any server will do (a standby too).
set -eu
export PGPASSWORD="${POSTGRES_REPLICATION_PASSWORD:?}"
keep=${KEEP:-4}
hosts=$(printf '%s' "${SERVERS:?}" | tr ' ' ',')
target=/basebackups/$(date -u +%Y%m%dT%H%M%SZ)
pg_basebackup -d "host=$hosts user=replicator" -D "$target" -Ft -z -X stream -c fast
echo "base backup written to $target"
ls -1d /basebackups/*/ | sort | head -n "-$keep" | while read -r old; do
    echo "removing the base backup $old"
    rm -rf "$old"
done
oldest=$(ls -1d /basebackups/*/ | sort | head -n 1)
start=$(tar -xzOf "${oldest}base.tar.gz" backup_label \
    | sed -n 's/^START WAL LOCATION: .* (file \([0-9A-F]\{24\}\))$/\1/p')
if [ -z "$start" ]; then
    echo "no START WAL LOCATION in ${oldest}base.tar.gz: the archive is left as it is" >&2
    exit 1
fi
echo "pruning the WAL archive before $start (needed from ${oldest})"
pg_archivecleanup /archive "$start"
