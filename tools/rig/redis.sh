#!/usr/bin/env bash
# Starts a real redis-server (the Debian package) on a free loopback port, for integration tests.
#
#   tools/rig/redis.sh start DIR   start redis-server with its files in DIR; returns once it
#                                  answers PING. Writes DIR/port, DIR/pid, DIR/version and
#                                  DIR/redis.log; prints "rig: redis-server ... ready".
#   tools/rig/redis.sh start DIR --password
#                                  the same, but clients must authenticate: a random password
#                                  in DIR/password (the default user's, via requirepass in
#                                  DIR/redis.conf, so it is not on a command line).
#   tools/rig/redis.sh stop DIR    stop it (DIR is left for the caller to remove).
#   tools/rig/redis.sh cluster-start DIR
#                                  start a Redis Cluster of three masters (no replicas), each a
#                                  redis-server with its files in DIR/node1..3; returns once
#                                  every node reports cluster_state:ok. Writes DIR/nodes (the
#                                  addresses, comma-separated) and DIR/version.
#   tools/rig/redis.sh cluster-stop DIR
#                                  stop the cluster's nodes.
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

# launch DIR PORT [SERVER-ARGS...]: start redis-server with DIR/redis.conf and wait until it
# answers PING.
launch() {
	local dir=$1 port=$2
	shift 2
	# Throw-away data: no RDB snapshots, no AOF; loopback only.
	redis-server "$dir/redis.conf" --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
		--daemonize no --logfile "$dir/redis.log" "$@" </dev/null >/dev/null 2>&1 &
	echo $! >"$dir/pid"
	echo "$port" >"$dir/port"

	# Ready means it answers PING: ask, don't sleep.
	local deadline=$((SECONDS + READY_TIMEOUT))
	until [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; do
		kill -0 "$(cat "$dir/pid")" 2>/dev/null || fail "$dir" "redis-server exited during start-up"
		[ "$SECONDS" -lt "$deadline" ] || fail "$dir" "redis-server did not answer within ${READY_TIMEOUT}s"
		sleep 0.1 # poll interval only
	done
}

start() {
	local dir=$1 password=${2:-}
	[ -z "$password" ] || [ "$password" = --password ] || die "unknown option $password (want --password)"
	install_missing redis-server redis-server
	install_missing redis-cli redis-tools
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)

	local port
	port=$(free_port)
	# The password goes in a config file (mode 600), not on the command line where ps shows it;
	# redis-cli reads it from REDISCLI_AUTH.
	: >"$dir/redis.conf"
	chmod 600 "$dir/redis.conf"
	if [ -n "$password" ]; then
		[ -s "$dir/password" ] || (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$dir/password")
		echo "requirepass $(cat "$dir/password")" >"$dir/redis.conf"
		export REDISCLI_AUTH
		REDISCLI_AUTH=$(cat "$dir/password")
	fi
	launch "$dir" "$port"

	# The version the running server reports about itself.
	local version
	version=$(redis-cli -h 127.0.0.1 -p "$port" info server | tr -d '\r' | sed -n 's/^redis_version://p')
	echo "$version" >"$dir/version"
	echo "rig: redis-server $version ready on 127.0.0.1:$port${password:+ (password required)}"
}

stop() { stop_pidfile "$1" 10; }

cluster_start() {
	local dir=$1
	install_missing redis-server redis-server
	install_missing redis-cli redis-tools
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	local addrs=() n port
	for n in 1 2 3; do
		mkdir -p "$dir/node$n"
		: >"$dir/node$n/redis.conf"
		port=$(free_port)
		# The cluster bus port is set explicitly: the default (port + 10000) may be taken or
		# out of range for a random port.
		launch "$dir/node$n" "$port" --cluster-enabled yes --cluster-config-file "$dir/node$n/nodes.conf" \
			--cluster-port "$(free_port)" --cluster-node-timeout 5000
		addrs+=("127.0.0.1:$port")
	done
	redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1 ||
		{ cat "$dir/create.log" >&2; cluster_fail "$dir" "redis-cli --cluster create failed"; }
	# Every node must agree the slots are covered before a client can use the cluster.
	local deadline=$((SECONDS + READY_TIMEOUT)) addr
	for addr in "${addrs[@]}"; do
		until redis-cli -h "${addr%:*}" -p "${addr#*:}" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; do
			[ "$SECONDS" -lt "$deadline" ] || cluster_fail "$dir" "the cluster did not reach cluster_state:ok within ${READY_TIMEOUT}s"
			sleep 0.1 # poll interval only
		done
	done
	(
		IFS=,
		echo "${addrs[*]}"
	) >"$dir/nodes"
	redis-cli -h 127.0.0.1 -p "${addrs[0]#*:}" info server | tr -d '\r' | sed -n 's/^redis_version://p' >"$dir/version"
	echo "rig: redis cluster $(cat "$dir/version") ready: three masters at $(cat "$dir/nodes")"
}

cluster_fail() {
	log "error: $2"
	cluster_stop "$1"
	exit 1
}

cluster_stop() {
	local n
	for n in 1 2 3; do
		[ ! -d "$1/node$n" ] || stop_pidfile "$1/node$n" 10
	done
}

case "${1:-}" in
start) start "${2:?usage: redis.sh start DIR [--password]}" "${3:-}" ;;
stop) stop "${2:?usage: redis.sh stop DIR}" ;;
cluster-start) cluster_start "${2:?usage: redis.sh cluster-start DIR}" ;;
cluster-stop) cluster_stop "${2:?usage: redis.sh cluster-stop DIR}" ;;
*) die "usage: redis.sh start DIR [--password] | stop DIR | cluster-start DIR | cluster-stop DIR" ;;
esac
