# Shared by the rig scripts: logging, installing what a fresh machine lacks, free ports.

log() { echo "rig: $*" >&2; }
die() { log "error: $*"; exit 1; }

# install_missing CMD PKG...: apt-get install PKGs when CMD is not on PATH (fresh CI machines).
install_missing() {
	local cmd=$1
	shift
	command -v "$cmd" >/dev/null 2>&1 && return 0
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	log "$cmd not found: installing $* with apt-get"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# free_port: ask the OS for an unused loopback port (bind to port 0); fall back to probing.
free_port() {
	if command -v python3 >/dev/null 2>&1; then
		python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
		return
	fi
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 40000))
		# A refused connection means nothing listens there.
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	die "no free port found"
}

# stop_pidfile DIR SECONDS: SIGTERM the process in DIR/pid for a clean shutdown, SIGKILL it if
# it takes longer than SECONDS.
stop_pidfile() {
	local dir=$1 grace=$2 pid
	[ -f "$dir/pid" ] || return 0
	pid=$(cat "$dir/pid")
	kill "$pid" 2>/dev/null || { rm -f "$dir/pid"; return 0; }
	local deadline=$((SECONDS + grace))
	while kill -0 "$pid" 2>/dev/null; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			kill -9 "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.1
	done
	rm -f "$dir/pid"
}
