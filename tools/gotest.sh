#!/usr/bin/env bash
# Runs go test verbosely but prints only what a reader of a CI log needs: every test's result
# (so the log shows which integration tests ran against the real broker and redis-server),
# the lines tests log about the rig, and the package summaries. On failure the full output of
# the failing tests follows. The whole log is kept in .cache/go-test.log.
set -uo pipefail
mkdir -p .cache
log=.cache/go-test.log
# Every module of the repository: flowd and the connector SDK (connectors/sdk/go.mod).
: >"$log"
rc=0
for mod in . connectors/sdk; do
	(cd "$mod" && go test "$@" -v ./...) >>"$log" 2>&1 || rc=$?
done
grep -E '^(--- (PASS|FAIL|SKIP)|ok |FAIL|\?|panic:)|rig_test.go:.*(kafka broker|redis-server)' "$log"
if [ $rc -ne 0 ]; then
	echo
	echo "---- output of failing tests ($log) ----"
	grep -B2 -A40 -E '^(--- FAIL|panic:)' "$log" | head -n 400
fi
passed=$(grep -cE '^\s*--- PASS' "$log")
failed=$(grep -cE '^\s*--- FAIL' "$log")
skipped=$(grep -cE '^\s*--- SKIP' "$log")
echo
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit $rc
