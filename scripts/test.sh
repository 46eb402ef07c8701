#!/usr/bin/env bash
# The whole test suite (README's second command runs this through `npm test`).
# Builds the agent, brings up Docker in swarm mode when the suite needs it (root only), runs vitest,
# and ends with one line "N passed, N failed".
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

npx vitest run --reporter=default --reporter=json --outputFile.json="$summary_file" "$@"
rc=$?

node -e '
  const fs = require("node:fs");
  let r;
  try { r = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); } catch { console.log("0 passed, 1 failed"); process.exit(0); }
  const skipped = r.numPendingTests + (r.numTodoTests || 0);
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
' "$summary_file"
exit $rc
