#!/bin/sh
# Entry point of both servers of compose.postgres-ha.yaml, as root like the image's own: the
# shared WAL archive made the postgres user's (a new volume is root's), clone-standby.sh as
# postgres, then the image's entrypoint (initdb and the init scripts on an empty data
# directory, then PostgreSQL) with primary.conf.
set -eu
install -d -o postgres -g postgres -m 0700 /archive
gosu postgres sh /etc/postgresql/clone-standby.sh
exec docker-entrypoint.sh postgres -c config_file=/etc/postgresql/primary.conf
