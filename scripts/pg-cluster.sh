#!/bin/sh
# pg-cluster.sh - a throwaway PostgreSQL cluster for tests of the PostgreSQL store backend.
#
#   pg-cluster.sh start DIR   initdb + start a cluster in DIR that listens only on a Unix
#                             socket in DIR; prints one line, a libpq URL for it
#   pg-cluster.sh stop DIR    stops it (immediate: the data is thrown away) and removes DIR
#
# It never touches the package's own default cluster: its own data directory, its socket in
# DIR (so the default port may be shared with a running system cluster), no TCP listener.
# initdb refuses to run as root, so as root the server runs as the `postgres` system user
# (created by Debian's postgresql package) and DIR is handed over to it. Only the URL goes to
# stdout; everything else goes to stderr or to log files inside DIR.
set -eu

die() {
    echo "pg-cluster: $*" >&2
    exit 1
}

usage() {
    die "usage: pg-cluster.sh start|stop DIR"
}

[ $# -eq 2 ] || usage
cmd=$1
dir=$2

# A marker file tells `stop` that DIR is ours to delete: a wrong argument must never make it
# remove a directory this script did not set up.
marker=.crewd-pg-cluster

# Newest installed server; pg_config of the client package may name another major version.
find_bindir() {
    bindir=$(for d in /usr/lib/postgresql/*/bin; do [ -d "$d" ] && echo "$d"; done |
        sort -V | tail -1)
    if [ -z "$bindir" ] && command -v pg_config >/dev/null 2>&1; then
        bindir=$(pg_config --bindir)
    fi
    if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ] || [ ! -x "$bindir/pg_ctl" ]; then
        die "no PostgreSQL server binaries (initdb, pg_ctl) found; run scripts/deps.sh"
    fi
}

# Runs a server binary as the cluster's owner: `postgres` when we are root, ourselves otherwise.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    find_bindir
    mkdir -p "$dir" || die "cannot create $dir"
    dir=$(cd "$dir" && pwd -P)
    # The path goes unescaped into a URL query and into postgresql.conf, and the socket path
    # (DIR/.s.PGSQL.5432) must fit in sun_path (107 bytes).
    case $dir in
    *[!A-Za-z0-9/._-]*) die "DIR must contain only letters, digits and / . _ - : $dir" ;;
    esac
    [ ${#dir} -le 80 ] || die "DIR is too long for a Unix socket path (max 80 bytes): $dir"
    [ ! -e "$dir/data" ] || die "$dir already holds a cluster"
    : >"$dir/$marker"

    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' system user"
        chown -R postgres: "$dir"
        # The server must reach DIR through every parent directory.
        runuser -u postgres -- test -w "$dir" ||
            die "user postgres cannot reach $dir (a parent directory is closed to it)"
    fi
    # The server binaries complain when they cannot stat their working directory.
    cd "$dir"

    as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C \
        --no-sync >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; die "initdb failed (log above)"; }
    cat >>"$dir/data/postgresql.conf" <<EOF
# pg-cluster.sh: a throwaway test cluster, reachable only through its own socket.
listen_addresses = ''
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -W start >/dev/null 2>&1 ||
        { cat "$dir/server.log" >&2 2>/dev/null || true; die "pg_ctl start failed"; }

    # Bounded wait (about 30 s) for the server to accept connections.
    tries=0
    until "$bindir/pg_isready" -q -h "$dir" -U postgres -d postgres; do
        tries=$((tries + 1))
        if [ $tries -ge 150 ]; then
            cat "$dir/server.log" >&2 2>/dev/null || true
            as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
            die "server in $dir did not accept connections within 30 s (log above)"
        fi
        sleep 0.2
    done
    echo "postgresql:///postgres?host=$dir&user=postgres"
}

stop() {
    [ -e "$dir" ] || exit 0
    [ -f "$dir/$marker" ] || die "$dir was not set up by pg-cluster.sh; not removing it"
    find_bindir
    cd /
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 ||
            echo "pg-cluster: pg_ctl stop failed in $dir (removing it anyway)" >&2
    fi
    rm -rf "$dir"
}

case $cmd in
start) start ;;
stop) stop ;;
*) usage ;;
esac
