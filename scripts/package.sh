#!/usr/bin/env bash
# `npm run package`: build skypanel-agent_<version>_amd64.deb with dpkg-deb. The package carries
# its own Node 24 runtime (the npm registry's `node` package binary) under /usr/lib/skypanel-agent,
# so it installs and runs on a Debian host with no Node at all; the unit, the system user and the
# config and state directories come from its maintainer scripts (debian/ beside this script).
#
#   OUT_DIR=DIR   where the .deb goes (default: ./build)
#   NODE_SPEC=…   the runtime to ship (default: node@24, the supported LTS major)
#   NO_BUILD=1    package the existing dist/ instead of building it first
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT_DIR=${OUT_DIR:-$ROOT/build}
NODE_SPEC=${NODE_SPEC:-node@24}
VERSION=$(node -p 'require("./package.json").version')
ARCH=amd64
[ "$(uname -m)" = x86_64 ] || { echo "package: only amd64 is built (this is $(uname -m))" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "package: dpkg-deb is needed (apt-get install dpkg)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/skypanel-agent-package.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/stage
lib=$stage/usr/lib/skypanel-agent

# NO_BUILD=1 packages the dist/ that is there (the test suite does: `npm test` has just built it,
# and rewriting dist/ under the other test files' running agents would race them).
if [ "${NO_BUILD:-0}" != 1 ]; then
  echo "package: building the agent"
  npm run --silent build
fi
[ -f dist/cli/main.js ] || { echo "package: dist/ is missing: npm run build" >&2; exit 1; }

echo "package: the agent and its production dependencies"
mkdir -p "$lib"
cp -r bin dist systemd package.json package-lock.json README.md "$lib/"
# The reference control plane is the test suite's and the benchmarks' harness: no command uses it.
rm -rf "$lib/dist/refcp"
# Only what the agent runs with: no dev dependencies, no install scripts.
(cd "$lib" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
rm -f "$lib/package-lock.json"

echo "package: the Node runtime ($NODE_SPEC from the npm registry)"
npm install --prefix "$work/runtime" --no-save --no-audit --no-fund --loglevel=error "$NODE_SPEC"
mkdir -p "$lib/node/bin"
cp "$work/runtime/node_modules/node/bin/node" "$lib/node/bin/node"
# The npm build keeps its debug symbols (~125 MB); stripped it is a third of that.
if command -v strip >/dev/null; then strip --strip-all "$lib/node/bin/node"; fi
node_version=$("$lib/node/bin/node" --version)
case "$node_version" in v24.*) ;; *) echo "package: expected Node 24, got $node_version" >&2; exit 1 ;; esac

echo "package: the command, the unit, the maintainer scripts"
mkdir -p "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/DEBIAN"
cat > "$stage/usr/bin/skypanel-agent" <<'EOF'
#!/bin/sh
# skypanel-agent with its private Node runtime (see /usr/lib/skypanel-agent/node).
exec /usr/lib/skypanel-agent/node/bin/node /usr/lib/skypanel-agent/bin/skypanel-agent "$@"
EOF
chmod 0755 "$stage/usr/bin/skypanel-agent"
# The same unit `skypanel-agent install` writes, ExecStart on the private runtime.
node --input-type=module -e '
  const { readFileSync, writeFileSync } = await import("node:fs");
  const { renderUnit } = await import(process.argv[1]);
  writeFileSync(process.argv[2], renderUnit(readFileSync("systemd/skypanel-agent.service", "utf8"), "/usr/lib/skypanel-agent/node/bin/node", "/usr/lib/skypanel-agent/bin/skypanel-agent"));
' "$ROOT/dist/cli/unit-file.js" "$stage/lib/systemd/system/skypanel-agent.service"
chmod 0644 "$stage/lib/systemd/system/skypanel-agent.service"
for script in postinst prerm postrm; do
  install -m 0755 "scripts/debian/$script" "$stage/DEBIAN/$script"
done
installed_kb=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<EOF
Package: skypanel-agent
Version: $VERSION
Architecture: $ARCH
Maintainer: SkyPanelV2 Container Platform <ops@skypanel.invalid>
Installed-Size: $installed_kb
Depends: adduser, libc6 (>= 2.28), libstdc++6
Recommends: docker.io | docker-ce
Section: admin
Priority: optional
Description: worker-node agent of the SkyPanelV2 Container Platform
 Registers a Docker Swarm host with the SkyPanelV2 control plane, sends
 heartbeats with its real capacity and load, reconciles the deployments
 assigned to it and meters their usage. Ships its own Node.js $node_version
 runtime under /usr/lib/skypanel-agent.
EOF

mkdir -p "$OUT_DIR"
deb=$OUT_DIR/skypanel-agent_${VERSION}_${ARCH}.deb
# zstd at a low level: an xz pass over the runtime takes minutes, this a few seconds.
dpkg-deb --root-owner-group -Zzstd -z3 --build "$stage" "$deb" >/dev/null
echo "package: $deb ($(du -h "$deb" | cut -f1), Node $node_version)"
