#!/usr/bin/env bash
# Starts a real redis-server (the Debian package) on a free loopback port, for integration tests.
#
#   tools/rig/redis.sh start DIR   start redis-server with its files in DIR; returns once it
#                                  answers PING. Writes DIR/port, DIR/pid, DIR/version and
#                                  DIR/redis.log; prints "rig: redis-server ... ready".
#   tools/rig/redis.sh stop DIR    stop it (DIR is left for the caller to remove).
#
# tools/rig/with-rig.sh is the usual entry point; it also removes DIR.
set -euo pipefail

READY_TIMEOUT=${FLOWD_RIG_REDIS_TIMEOUT:-30}

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

fail() {
	local dir=$1
	shift
	log "error: $*"
	if [ -f "$dir/redis.log" ]; then
		log "last 50 lines of $dir/redis.log:"
		tail -n 50 "$dir/redis.log" >&2
	fi
	stop "$dir"
	exit 1
}

start() {
	local dir=$1
	install_missing redis-server redis-server
	install_missing redis-cli redis-tools
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)

	local port
	port=$(free_port)
	# Throw-away data: no RDB snapshots, no AOF; loopback only.
	redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
		--daemonize no --logfile "$dir/redis.log" </dev/null >/dev/null 2>&1 &
	echo $! >"$dir/pid"
	echo "$port" >"$dir/port"

	# Ready means it answers PING: ask, don't sleep.
	local deadline=$((SECONDS + READY_TIMEOUT))
	until [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; do
		kill -0 "$(cat "$dir/pid")" 2>/dev/null || fail "$dir" "redis-server exited during start-up"
		[ "$SECONDS" -lt "$deadline" ] || fail "$dir" "redis-server did not answer within ${READY_TIMEOUT}s"
		sleep 0.1 # poll interval only
	done

	# The version the running server reports about itself.
	local version
	version=$(redis-cli -h 127.0.0.1 -p "$port" info server | tr -d '\r' | sed -n 's/^redis_version://p')
	echo "$version" >"$dir/version"
	echo "rig: redis-server $version ready on 127.0.0.1:$port"
}

stop() { stop_pidfile "$1" 10; }

case "${1:-}" in
start) start "${2:?usage: redis.sh start DIR}" ;;
stop) stop "${2:?usage: redis.sh stop DIR}" ;;
*) die "usage: redis.sh start DIR | stop DIR" ;;
esac
