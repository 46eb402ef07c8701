#!/usr/bin/env bash
# Make this machine ready for the Docker-backed tests: Docker installed, dockerd answering, the
# swarm initialised, and the local test image built (no image can be pulled here).
# Idempotent and bounded; prints one summary line. Exit 3 = not root (tests then skip, loudly).
set -euo pipefail

IMAGE=skypanel-test/busybox:1
log=/var/log/dockerd.log

if [ "$(id -u)" != "0" ]; then
  echo "ensure-docker: not root, cannot install or start Docker" >&2
  exit 3
fi

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker >/dev/null 2>&1 || need+=(docker.io)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd || need+=(busybox-static)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq >/dev/null
  timeout 600 apt-get install -y -qq "${need[@]}" >/dev/null
fi
# busybox (not busybox-static) lacks httpd; the static build is the one we copy into the image.
if ! /bin/busybox --list 2>/dev/null | grep -qx httpd; then
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq busybox-static >/dev/null
fi

if ! timeout 10 docker version >/dev/null 2>&1; then
  setsid dockerd >"$log" 2>&1 </dev/null &
  for _ in $(seq 1 120); do
    timeout 5 docker version >/dev/null 2>&1 && break
    sleep 0.5
  done
  timeout 10 docker version >/dev/null 2>&1 || { echo "ensure-docker: dockerd did not come up within 60 s; see $log" >&2; tail -20 "$log" >&2; exit 1; }
fi

state=$(timeout 10 docker info --format '{{.Swarm.LocalNodeState}}')
if [ "$state" != "active" ]; then
  timeout 60 docker swarm init --advertise-addr 127.0.0.1 >/dev/null
fi

if ! timeout 10 docker image inspect "$IMAGE" >/dev/null 2>&1; then
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp /bin/busybox "$ctx/busybox"
  cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["sh"]
DOCKERFILE
  DOCKER_BUILDKIT=0 timeout 120 docker build -q -t "$IMAGE" "$ctx" >/dev/null 2>"$ctx/build.err" \
    || { echo "ensure-docker: building $IMAGE failed:" >&2; cat "$ctx/build.err" >&2; exit 1; }
fi

echo "ensure-docker: $(docker version --format 'Docker {{.Server.Version}}'), swarm $(docker info --format '{{.Swarm.LocalNodeState}}'), image $IMAGE ready"
