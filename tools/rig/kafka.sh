#!/usr/bin/env bash
# Starts a real Apache Kafka broker (KRaft, combined broker+controller, one node) on a free
# loopback port, for integration tests. No Debian package ships Kafka and no Docker runs here,
# so the broker's jars come from Maven Central (see ../shared/notes/kafka-from-maven.md).
#
#   tools/rig/kafka.sh start DIR   start a broker with its data and log in DIR; returns once the
#                                  broker answers a metadata request. Writes DIR/port, DIR/cport,
#                                  DIR/pid, DIR/version and DIR/kafka.log; prints "rig: kafka ...
#                                  ready". Run again on a stopped broker's DIR, it restarts that
#                                  broker on the same ports with the same data.
#   tools/rig/kafka.sh start DIR --sasl
#                                  the same broker with authentication and authorization: its
#                                  client listener speaks SASL_PLAINTEXT with SCRAM-SHA-512 only,
#                                  the controller listener SASL PLAIN, and the KRaft
#                                  StandardAuthorizer denies what no ACL allows. SCRAM users
#                                  admin (super user), flowd and connector are created at format
#                                  time, each with a random password in DIR/sasl/<user>;
#                                  DIR/sasl/admin.properties is a client config for Kafka's tools.
#                                  The rig grants no ACLs itself: the caller does, as admin
#                                  (internal/testrig applies kafkax.RoleACLs).
#   tools/rig/kafka.sh stop DIR    stop that broker (DIR is left for the caller to remove).
#   tools/rig/kafka.sh cluster-start DIR
#                                  start a cluster of three combined broker+controller nodes
#                                  (KRaft, a static three-voter quorum) with their data in
#                                  DIR/1..3, each node's files as above; returns once every
#                                  node serves (its metadata lists itself). Internal topics
#                                  have three replicas and min.insync.replicas 2, and a dead
#                                  broker is fenced (its partitions get new leaders) within
#                                  about 4 s. Writes DIR/brokers (comma-separated addresses).
#   tools/rig/kafka.sh node-start DIR/N
#                                  restart one stopped or killed node of a cluster on its ports
#                                  and data; returns once it is back in the cluster's metadata
#                                  (which needs a quorum: two of the three nodes up).
#   tools/rig/kafka.sh kill DIR[/N] SIGKILL a broker or a cluster node (no clean shutdown).
#   tools/rig/kafka.sh cluster-stop DIR
#                                  stop the cluster's nodes.
#   tools/rig/kafka.sh fetch       only fill the jar cache (.cache/kafka-$KAFKA_VERSION/libs).
#
# tools/rig/with-rig.sh is the usual entry point; it also removes DIR.
set -euo pipefail

KAFKA_VERSION=4.1.1
SCALA_VERSION=2.13
LOG4J_VERSION=2.24.3 # Kafka 4.x POMs omit the SLF4J binding; this is the one its tarball ships.
READY_TIMEOUT=${FLOWD_RIG_KAFKA_TIMEOUT:-90}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE="$ROOT/.cache/kafka-$KAFKA_VERSION"
LIBS="$CACHE/libs"

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# fetch: copy the broker's runtime jars from Maven Central into the cache, once. A lock keeps
# two concurrent cold runs from writing the same folder; a marker file says the copy finished.
fetch() {
	mkdir -p "$CACHE"
	exec 9>"$CACHE/.lock"
	flock 9
	if [ -f "$LIBS/.complete" ]; then
		flock -u 9
		return 0
	fi
	install_missing java openjdk-17-jre-headless
	install_missing mvn maven
	log "fetching kafka_$SCALA_VERSION:$KAFKA_VERSION jars from Maven Central into $LIBS"
	cat >"$CACHE/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>flowd.rig</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_$SCALA_VERSION</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.8.1</version>
      </plugin>
    </plugins>
  </build>
</project>
EOF
	rm -rf "$LIBS.tmp"
	# Maven's output is kept in a file and shown only when it fails.
	if ! mvn -q -B -f "$CACHE/pom.xml" dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$LIBS.tmp" >"$CACHE/mvn.log" 2>&1; then
		tail -n 50 "$CACHE/mvn.log" >&2
		die "maven could not fetch the kafka jars (log: $CACHE/mvn.log)"
	fi
	[ -f "$LIBS.tmp/kafka_$SCALA_VERSION-$KAFKA_VERSION.jar" ] || die "maven did not bring kafka_$SCALA_VERSION-$KAFKA_VERSION.jar"
	rm -rf "$LIBS"
	mv "$LIBS.tmp" "$LIBS"
	touch "$LIBS/.complete"
	flock -u 9
}

# fail DIR MSG: show why the broker did not come up, stop it, and exit non-zero.
fail() {
	local dir=$1
	shift
	log "error: $*"
	if [ -f "$dir/kafka.log" ]; then
		log "last 50 lines of $dir/kafka.log:"
		tail -n 50 "$dir/kafka.log" >&2
	fi
	stop "$dir"
	exit 1
}

start() {
	local dir=$1 sasl=${2:-}
	[ -z "$sasl" ] || [ "$sasl" = --sasl ] || die "unknown option $sasl (want --sasl)"
	install_missing kcat kcat
	fetch
	mkdir -p "$dir/data"
	dir=$(cd "$dir" && pwd)

	# A DIR that held a broker before restarts it on the same ports and data (tests stop and
	# start a private broker to watch clients recover); a new DIR gets free ports.
	local port cport
	if [ -f "$dir/port" ] && [ -f "$dir/cport" ]; then
		port=$(cat "$dir/port")
		cport=$(cat "$dir/cport")
	else
		port=$(free_port)
		cport=$(free_port)
		while [ "$cport" = "$port" ]; do cport=$(free_port); done
	fi

	# Listeners: plaintext, or (--sasl) SCRAM on the client listener and PLAIN on the controller
	# listener (KRaft controllers cannot check SCRAM: the credentials live in the metadata log
	# they serve).
	local listeners security=()
	if [ -n "$sasl" ]; then
		sasl_users "$dir"
		local admin_pw
		admin_pw=$(cat "$dir/sasl/admin")
		listeners="listeners=SASL_PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
		security=(
			"sasl.enabled.mechanisms=SCRAM-SHA-512"
			"sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512"
			"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$admin_pw\";"
			"sasl.mechanism.controller.protocol=PLAIN"
			"listener.name.controller.sasl.enabled.mechanisms=PLAIN"
			"listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"$admin_pw\" user_admin=\"$admin_pw\";"
			"authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer"
			"super.users=User:admin"
			"allow.everyone.if.no.acl.found=false"
		)
	else
		listeners="listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
	fi

	cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
$listeners
controller.listener.names=CONTROLLER
log.dirs=$dir/data
# One node: every internal topic has one replica, and one partition where that is tunable.
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests create their topics explicitly and want consumer groups to start at once.
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
PROPS
	[ ${#security[@]} -eq 0 ] || printf '%s\n' "${security[@]}" >>"$dir/server.properties"
	echo "$port" >"$dir/port"
	echo "$cport" >"$dir/cport"

	# Formatted already (a restart): keep the data and its cluster id.
	if [ ! -f "$dir/data/meta.properties" ]; then
		# SCRAM credentials go into the metadata log at format time: the broker cannot
		# authenticate anyone (not even the admin who would add them) before that.
		local scram=()
		if [ -n "$sasl" ]; then
			for u in admin flowd connector; do
				scram+=(--add-scram "SCRAM-SHA-512=[name=$u,password=$(cat "$dir/sasl/$u")]")
			done
		fi
		format "$dir" "$(cluster_id)" --standalone "${scram[@]}"
	fi
	launch "$dir" "$sasl"
	echo "rig: kafka $(cat "$dir/version") ready on 127.0.0.1:$port${sasl:+ (SASL_PLAINTEXT, SCRAM-SHA-512, ACLs enforced)} (${SECONDS}s)"
}

# cluster_start DIR: three combined nodes in DIR/1..3 on loopback ports, one static quorum.
cluster_start() {
	local dir=$1
	install_missing kcat kcat
	fetch
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	local n ports=() cports=() voters="" brokers=""
	for n in 1 2 3; do
		ports[n]=$(free_port)
		cports[n]=$(free_port)
	done
	[ "$(printf '%s\n' "${ports[@]}" "${cports[@]}" | sort -u | wc -l)" -eq 6 ] || die "free_port gave the same port twice; try again"
	for n in 1 2 3; do
		voters+="${voters:+,}$n@127.0.0.1:${cports[n]}"
		brokers+="${brokers:+,}127.0.0.1:${ports[n]}"
	done
	local id
	id=$(cluster_id)
	for n in 1 2 3; do
		local node="$dir/$n"
		mkdir -p "$node/data"
		cat >"$node/server.properties" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:${ports[n]},CONTROLLER://127.0.0.1:${cports[n]}
advertised.listeners=PLAINTEXT://127.0.0.1:${ports[n]},CONTROLLER://127.0.0.1:${cports[n]}
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$node/data
# Three nodes: internal topics are replicated as a production cluster's are, with few
# partitions (each is a replica on every node of this small machine).
num.partitions=1
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
share.coordinator.state.topic.num.partitions=3
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
# A killed broker is fenced, and its partitions led by the others, 4 s after its last
# heartbeat (default 9 s); leadership returns to the preferred replicas within 10 s of its
# return (default 300 s), so a test sees both moves.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=4000
leader.imbalance.check.interval.seconds=10
PROPS
		echo "${ports[n]}" >"$node/port"
		echo "${cports[n]}" >"$node/cport"
	done
	# Formatting is a JVM start per node: in parallel.
	local pids=()
	for n in 1 2 3; do
		format "$dir/$n" "$id" &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || die "formatting a node's storage failed (see $dir/*/kafka.log)"; done
	echo "$brokers" >"$dir/brokers"
	# The nodes wait for each other (a quorum needs two voters): launch all, then check each.
	pids=()
	for n in 1 2 3; do
		launch "$dir/$n" "" &
		pids+=($!)
	done
	local failed=0
	for p in "${pids[@]}"; do wait "$p" || failed=1; done
	if [ "$failed" -ne 0 ]; then
		cluster_stop "$dir"
		die "the kafka cluster did not start"
	fi
	echo "rig: kafka $(cat "$dir/1/version") cluster of 3 nodes ready on $brokers (${SECONDS}s)"
}

cluster_stop() {
	local n
	for n in 1 2 3; do [ ! -d "$1/$n" ] || stop "$1/$n"; done
}

# node_start DIR/N: restart a node of a cluster with its properties and data.
node_start() {
	local dir=$1
	[ -f "$dir/server.properties" ] && [ -f "$dir/data/meta.properties" ] || die "$dir holds no formatted kafka node"
	dir=$(cd "$dir" && pwd)
	launch "$dir" ""
	echo "rig: kafka node $(basename "$dir") back on 127.0.0.1:$(cat "$dir/port") (${SECONDS}s)"
}

# kill_node DIR: SIGKILL the broker in DIR, as a crash would end it.
kill_node() {
	local dir=$1 pid
	[ -f "$dir/pid" ] || die "no broker runs in $dir"
	pid=$(cat "$dir/pid")
	kill -9 "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done # until the process is gone
	rm -f "$dir/pid"
}

# cluster_id: a Kafka cluster id is 16 random bytes in unpadded base64url; Kafka avoids a
# leading '-' (it reads as a command-line flag). Made here to save a JVM start of
# `StorageTool random-uuid`.
cluster_id() {
	local id="-"
	while [[ $id == -* ]]; do
		id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
	done
	echo "$id"
}

# format DIR CLUSTER-ID [STORAGE-TOOL-ARGS...]: format the node's storage.
format() {
	local dir=$1 id=$2
	shift 2
	write_log4j "$dir"
	java -Dlog4j2.configurationFile="$dir/log4j2.xml" -Djava.awt.headless=true -cp "$LIBS/*" \
		kafka.tools.StorageTool format --ignore-formatted -t "$id" -c "$dir/server.properties" "$@" \
		>"$dir/kafka.log" 2>&1 || fail "$dir" "formatting the storage failed"
}

# write_log4j DIR: quiet by default; the INFO lines kept say which version started, when it
# was up and when its client listener opened. FLOWD_RIG_KAFKA_LOG_LEVEL=INFO shows
# everything; FLOWD_RIG_KAFKA_REQUEST_LOG=DEBUG logs every request the broker completes (to
# count them by API).
write_log4j() {
	cat >"$1/log4j2.xml" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
    <Logger name="org.apache.kafka.common.utils.AppInfoParser" level="INFO"/>
    <Logger name="kafka.network.DataPlaneAcceptor" level="INFO"/>
    <Logger name="kafka.request.logger" level="${FLOWD_RIG_KAFKA_REQUEST_LOG:-WARN}"/>
    <Root level="${FLOWD_RIG_KAFKA_LOG_LEVEL:-WARN}">
      <AppenderRef ref="stderr"/>
    </Root>
  </Loggers>
</Configuration>
XML
}

# launch DIR SASL: run the formatted node in DIR and wait until it serves: its metadata lists
# itself. Writes DIR/pid and DIR/version.
launch() {
	local dir=$1 sasl=$2 port id
	port=$(cat "$dir/port")
	id=$(sed -n 's/^node\.id=//p' "$dir/server.properties")
	write_log4j "$dir"
	# Only what this start writes to the log counts for readiness below (a restart appends).
	local log_from
	log_from=$(($(stat -c %s "$dir/kafka.log" 2>/dev/null || echo 0) + 1))
	# Detached from our stdout/stderr so a caller reading our output is not held open by the JVM.
	java -Xms256m -Xmx512m -Dlog4j2.configurationFile="$dir/log4j2.xml" -Djava.awt.headless=true \
		-cp "$LIBS/*" kafka.Kafka "$dir/server.properties" </dev/null >>"$dir/kafka.log" 2>&1 &
	echo $! >"$dir/pid"

	# Ready means the broker answers a metadata request listing itself (registered with the
	# controller and unfenced): ask, don't sleep. (grep reads all of kcat's output: with -q, kcat's SIGPIPE would fail the pipeline.)
	# Debian's kcat (librdkafka 2.0.2) fails SCRAM-SHA-512 against Kafka 4.1 with "invalid
	# credentials" where kafka-go and Kafka's own clients succeed, so with --sasl ready means
	# the broker opened its client listener (after its authorizer loaded); callers then
	# authenticate with a deadline (internal/testrig does).
	ready() {
		if [ -n "$sasl" ]; then
			tail -c "+$log_from" "$dir/kafka.log" | grep "Awaiting socket connections on 127.0.0.1:$port" >/dev/null
		else
			timeout 5 kcat -L -b "127.0.0.1:$port" -m 2 2>/dev/null | grep "^ *broker $id at 127.0.0.1:$port" >/dev/null
		fi
	}
	local deadline=$((SECONDS + READY_TIMEOUT))
	until ready; do
		kill -0 "$(cat "$dir/pid")" 2>/dev/null || fail "$dir" "the broker exited during start-up"
		[ "$SECONDS" -lt "$deadline" ] || fail "$dir" "the broker did not answer within ${READY_TIMEOUT}s"
		sleep 0.2 # poll interval only
	done

	# The version the running broker reports about itself (AppInfoParser), else the jar's.
	local version
	version=$(sed -n 's/.*Kafka version: \([^ ]*\).*/\1/p' "$dir/kafka.log" | head -n 1)
	[ -n "$version" ] || version=$KAFKA_VERSION
	echo "$version" >"$dir/version"
}

# sasl_users DIR: a random password per rig user in DIR/sasl/<user> (kept across restarts: the
# credentials are in the formatted data), and DIR/sasl/admin.properties for Kafka's tools.
sasl_users() {
	local dir=$1
	mkdir -p "$dir/sasl"
	chmod 700 "$dir/sasl"
	for u in admin flowd connector; do
		# Letters and digits only: the password is quoted inside a JAAS line and a format argument.
		[ -s "$dir/sasl/$u" ] || head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$dir/sasl/$u"
	done
	cat >"$dir/sasl/admin.properties" <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(cat "$dir/sasl/admin")";
EOF
}

stop() { stop_pidfile "$1" 15; }

usage="usage: kafka.sh start DIR [--sasl] | stop DIR | cluster-start DIR | cluster-stop DIR | node-start DIR/N | kill DIR | fetch"
case "${1:-}" in
start) start "${2:?$usage}" "${3:-}" ;;
stop) stop "${2:?$usage}" ;;
cluster-start) cluster_start "${2:?$usage}" ;;
cluster-stop) cluster_stop "${2:?$usage}" ;;
node-start) node_start "${2:?$usage}" ;;
kill) kill_node "${2:?$usage}" ;;
fetch) fetch ;;
*) die "$usage" ;;
esac
