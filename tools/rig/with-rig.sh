#!/usr/bin/env bash
# with-rig.sh CMD...: run CMD with a real Kafka broker, a real redis-server and a real
# three-master Redis Cluster beside it.
#
# Starts both (in parallel: the Kafka JVM is the slow part), exports their addresses in the
# variables internal/testrig reads, runs CMD, and always stops both and removes their files,
# whether CMD passes, fails or is interrupted. Exits with CMD's exit code.
set -euo pipefail

if [ $# -eq 0 ]; then
	echo "usage: tools/rig/with-rig.sh CMD [ARGS...]" >&2
	exit 2
fi

RIG_BIN=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { echo "rig: $*" >&2; }

# Install what a fresh machine lacks, here and in one go: the two start scripts run in
# parallel and must not race each other for the apt lock.
missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v flock >/dev/null 2>&1 || missing+=(util-linux)
# The console's browser tests drive Debian's Chromium (FLOWD_CHROMIUM names another).
[ -n "${FLOWD_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	log "installing ${missing[*]} with apt-get"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

RIG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/flowd-rig.XXXXXX")
starters=()
cmd_pid=""

# shellcheck disable=SC2317 # called through the trap below
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	# Starters first, so none launches a server after we looked for it.
	for pid in "${starters[@]}"; do kill "$pid" 2>/dev/null || true; done
	[ -z "$cmd_pid" ] || kill "$cmd_pid" 2>/dev/null || true
	"$RIG_BIN/kafka.sh" stop "$RIG_DIR/kafka" || true
	"$RIG_BIN/redis.sh" stop "$RIG_DIR/redis" || true
	"$RIG_BIN/redis.sh" cluster-stop "$RIG_DIR/redis-cluster" || true
	rm -rf "$RIG_DIR"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

SECONDS=0
"$RIG_BIN/kafka.sh" start "$RIG_DIR/kafka" &
starters+=($!)
"$RIG_BIN/redis.sh" start "$RIG_DIR/redis" &
starters+=($!)
"$RIG_BIN/redis.sh" cluster-start "$RIG_DIR/redis-cluster" &
starters+=($!)
failed=0
for pid in "${starters[@]}"; do wait "$pid" || failed=1; done
starters=()
if [ "$failed" -ne 0 ]; then
	log "error: the test rig did not start"
	exit 1
fi
log "rig up in ${SECONDS}s"

kafka_port=$(cat "$RIG_DIR/kafka/port")
kafka_version=$(cat "$RIG_DIR/kafka/version")
redis_port=$(cat "$RIG_DIR/redis/port")
# What internal/testrig reads; FLOWD_REQUIRE_RIG turns its skips into failures.
export FLOWD_TEST_KAFKA_BROKERS="127.0.0.1:$kafka_port"
export FLOWD_TEST_KAFKA_VERSION="$kafka_version"
export FLOWD_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/0"
FLOWD_TEST_REDIS_CLUSTER=$(cat "$RIG_DIR/redis-cluster/nodes")
export FLOWD_TEST_REDIS_CLUSTER
export FLOWD_REQUIRE_RIG=1

# CMD runs in the background (stdin kept) so a signal to this script is handled at once rather
# than after CMD ends; cleanup then stops CMD too.
"$@" <&0 &
cmd_pid=$!
rc=0
wait "$cmd_pid" || rc=$?
cmd_pid=""
exit "$rc"
