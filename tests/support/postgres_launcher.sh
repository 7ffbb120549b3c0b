#!/usr/bin/env bash
# CTest fixture `postgres`: a throwaway PostgreSQL 15 for the ETL sink tests.
#
#   postgres_launcher.sh start STATE_DIR     initdb in a temp folder as an unprivileged user,
#                                            listen on 127.0.0.1:<free port> only (unix socket
#                                            in the temp folder), write STATE_DIR/url
#   postgres_launcher.sh stop STATE_DIR      pg_ctl stop (fast) and remove the temp folder
#   postgres_launcher.sh pause STATE_DIR     pg_ctl stop (fast), keeping the data (a restart test)
#   postgres_launcher.sh resume STATE_DIR    start it again on the same port, with its data
#
# Runs as root (CI, setup.sh) or as any user: as root the server runs as $SHOAL_PG_USER
# (default `nobody`), since PostgreSQL refuses to run as root. Stops only the server it started.
set -euo pipefail
cmd=${1:?start|stop}
state=${2:?state folder}
bin=${SHOAL_PG_BIN:-/usr/lib/postgresql/15/bin}
user=${SHOAL_PG_USER:-nobody}

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

free_port() {
  # A port nothing listens on, below the kernel's ephemeral range (ip_local_port_range): a port
  # in that range can be taken as the local port of any outgoing connection while the server is
  # paused, and `resume` must get the same port back (the chaos scenario postgres-restart failed
  # so on port 39088 once).
  local p lo hi
  read -r lo hi < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
  [ "$lo" -gt 21000 ] || lo=40000
  for _ in $(seq 1 50); do
    p=$(( 20000 + RANDOM % (lo - 20000) ))
    if ! ss -Htln "sport = :$p" 2>/dev/null | grep -q .; then echo "$p"; return 0; fi
  done
  return 1
}

server_options() { echo "-c listen_addresses=127.0.0.1 -p $1 -k $2 -c fsync=off -c max_connections=40"; }

case "$cmd" in
  start)
    [ -x "$bin/initdb" ] || { echo "postgres_launcher: $bin/initdb not found (deploy/setup.sh installs postgresql)" >&2; exit 1; }
    if [ -f "$state/data_dir" ] && [ -d "$(cat "$state/data_dir")" ]; then
      "$0" stop "$state" || true
    fi
    mkdir -p "$state"
    tmp=$(mktemp -d /tmp/shoal-pg.XXXXXX)
    chmod 755 "$tmp"
    [ "$(id -u)" -eq 0 ] && chown "$user" "$tmp"
    echo "$tmp" > "$state/data_dir"
    as_pg "$bin/initdb" -D "$tmp/data" -U shoal -A trust -E UTF8 --no-sync >"$tmp/initdb.log" 2>&1 ||
      { cat "$tmp/initdb.log" >&2; exit 1; }
    for attempt in 1 2 3 4 5; do
      port=$(free_port)
      if as_pg "$bin/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w -t 30 \
           -o "$(server_options "$port" "$tmp")" start >/dev/null; then
        echo "postgresql://shoal@127.0.0.1:$port/postgres" > "$state/url"
        echo "postgres_launcher: PostgreSQL on 127.0.0.1:$port (data $tmp)"
        exit 0
      fi
      echo "postgres_launcher: start attempt $attempt on port $port failed" >&2
      tail -5 "$tmp/server.log" >&2 || true
    done
    exit 1
    ;;
  stop)
    [ -f "$state/data_dir" ] || exit 0
    tmp=$(cat "$state/data_dir")
    if [ -d "$tmp/data" ]; then as_pg "$bin/pg_ctl" -D "$tmp/data" -m fast -w stop >/dev/null 2>&1 || true; fi
    rm -rf "$tmp" "$state/data_dir" "$state/url"
    ;;
  pause)
    tmp=$(cat "$state/data_dir")
    as_pg "$bin/pg_ctl" -D "$tmp/data" -m fast -w stop >/dev/null
    ;;
  resume)
    tmp=$(cat "$state/data_dir")
    port=$(sed -E 's|.*:([0-9]+)/.*|\1|' "$state/url")
    as_pg "$bin/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w -t 30 -o "$(server_options "$port" "$tmp")" start >/dev/null
    ;;
  *) echo "usage: $0 start|stop|pause|resume STATE_DIR" >&2; exit 2 ;;
esac
