#!/usr/bin/env bash
# The whole test suite (README's second command runs this through `npm test`).
# Builds the agent, brings up Docker in swarm mode when the suite needs it (root only), runs vitest,
# and ends with one line "N passed, N failed". Before the tests: the type check of everything,
# tests included (`tsc --noEmit -p .`), the linter (eslint.config.js: typescript-eslint, comment
# length bound) and the formatter check (prettier, .prettierrc.json: 140 columns). Each of the
# three that fails counts as one failed test and fails the run.
set -uo pipefail
cd "$(dirname "$0")/.."

summary_file=.test-results.json
rm -f "$summary_file"

if [ "$(id -u)" = "0" ]; then
  if ! bash scripts/ensure-docker.sh; then
    echo "ensure-docker failed: Docker-backed tests will fail loudly" >&2
  fi
  if ! bash scripts/ensure-postgres.sh; then
    echo "ensure-postgres failed: the panel's PostgreSQL tests will fail loudly" >&2
  fi
else
  echo "not root: cannot start dockerd; Docker-backed tests will be reported as skipped" >&2
fi

checks_failed=0
check() {
  local name=$1; shift
  local t0=$SECONDS
  if "$@"; then echo "$name: ok ($((SECONDS - t0)) s)"; else echo "$name: FAILED ($((SECONDS - t0)) s)" >&2; checks_failed=$((checks_failed + 1)); fi
}
check "typecheck (src and tests)" npx tsc --noEmit -p .
check "lint" npx eslint --max-warnings 0 .
check "format (prettier --check)" npx prettier --check --log-level warn .

npx vitest run --reporter=default --reporter=json --outputFile.json="$summary_file" "$@"
rc=$?

node -e '
  const fs = require("node:fs");
  let r;
  try { r = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); } catch { console.log(`0 passed, ${1 + Number(process.argv[2])} failed`); process.exit(0); }
  const skipped = r.numPendingTests + (r.numTodoTests || 0);
  const checks = Number(process.argv[2]);
  const note = checks ? ` (${checks} of them typecheck/lint)` : "";
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests + checks} failed${note}` + (skipped ? `, ${skipped} skipped` : ""));
' "$summary_file" "$checks_failed"
if [ "$checks_failed" -gt 0 ] && [ "$rc" -eq 0 ]; then rc=1; fi
exit $rc
