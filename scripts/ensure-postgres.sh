#!/usr/bin/env bash
# The panel's tests run a throwaway PostgreSQL cluster from the distribution's binaries
# (test/helpers/postgres.ts). Installs Debian's package when no initdb is present (root only).
set -euo pipefail
if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "PostgreSQL binaries missing and not root: the panel tests will fail (apt-get install postgresql)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
