#!/usr/bin/env bash
# Brings this machine to the state the Docker-backed tests need: dockerd answering on
# /var/run/docker.sock, a single-node swarm, and the local images skypanel-test/busybox:1 and
# skypanel-test/hello:1 (its CMD serves $GREETING on 8080)
# (nothing can be pulled here). Idempotent and safe to run concurrently (flock); every step is
# bounded by `timeout`. Quiet on success except for one summary line; on failure prints the step,
# the captured output, and exits non-zero. Exit 3 means "not root and Docker isn't ready": the
# test helper turns that into a skip (or a loud failure under CI).
set -uo pipefail

IMAGE=skypanel-test/busybox:1
HELLO_IMAGE=skypanel-test/hello:1
SOCK=/var/run/docker.sock
DOCKERD_LOG=/var/log/dockerd.log
START_WAIT_S=60
# The CLI honours DOCKER_HOST/DOCKER_CONTEXT; this script manages the local socket only.
export DOCKER_HOST="unix://$SOCK"
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
export DEBIAN_FRONTEND=noninteractive
# dockerd lives in /usr/sbin, which non-login root shells (su, sudo -E) often leave off PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

t0=$(date +%s%N)
log=$(mktemp -t ensure-docker.XXXXXX.log)
ctx=""
policy_rc=""
cleanup() {
  rm -f "$log"
  [ -n "$ctx" ] && rm -rf "$ctx"
  [ -n "$policy_rc" ] && rm -f "$policy_rc"
}
trap cleanup EXIT

fail() {
  echo "ensure-docker: FAILED: $*" >&2
  if [ -s "$log" ]; then
    echo "---- output of the failing step (last 40 lines) ----" >&2
    tail -n 40 "$log" >&2
  fi
  exit 1
}

# run SECONDS DESCRIPTION CMD...: output goes to the log, shown only if the step fails.
run() {
  local secs=$1 what=$2
  shift 2
  : >"$log"
  timeout --kill-after=5 "$secs" "$@" >>"$log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && fail "$what: timed out after ${secs}s"
  [ $rc -ne 0 ] && fail "$what (exit $rc)"
  return 0
}

docker_answers() { timeout 30 docker version >/dev/null 2>&1; }
swarm_state() { timeout 30 docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null; }
image_present() { timeout 10 docker image inspect "$IMAGE" >/dev/null 2>&1; }
hello_present() { timeout 10 docker image inspect "$HELLO_IMAGE" >/dev/null 2>&1; }

# A static busybox is required: the image is FROM scratch, so there is no libc to load a dynamic one.
busybox_ok() { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; }

if [ "$(id -u)" != "0" ]; then
  # Without root nothing can be installed or started, but an already prepared engine is usable.
  if command -v docker >/dev/null 2>&1 && docker_answers && [ "$(swarm_state)" = active ] && image_present && hello_present; then
    echo "ensure-docker: ready (not root; dockerd, swarm and $IMAGE were already in place)"
    exit 0
  fi
  echo "ensure-docker: not root (uid $(id -u)): cannot install or start dockerd, init the swarm or build $IMAGE" >&2
  exit 3
fi

# Two vitest workers may call this at once; without the lock both would start dockerd / init the swarm.
lockdir=/run/lock
[ -d "$lockdir" ] && [ -w "$lockdir" ] || lockdir=/tmp
lock="$lockdir/skypanel-ensure-docker.lock"
exec 9>"$lock" || fail "cannot open lock file $lock"
flock -w 900 9 || fail "another ensure-docker.sh held $lock for 15 min"

notes=()

# --- packages ---------------------------------------------------------------------------------
pkgs=()
if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then pkgs+=(docker.io); fi
busybox_ok || pkgs+=(busybox-static)
if [ ${#pkgs[@]} -gt 0 ]; then
  # Package maintainer scripts would try to start services; there is no init system to do that.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy_rc=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$policy_rc" && chmod +x "$policy_rc"
  fi
  run 300 "apt-get update" apt-get update -q
  run 900 "apt-get install ${pkgs[*]}" apt-get install -y -q --no-install-recommends "${pkgs[@]}"
  [ -n "$policy_rc" ] && rm -f "$policy_rc" && policy_rc=""
  hash -r
  command -v docker >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1 || fail "docker.io installed but docker/dockerd are not on PATH"
  busybox_ok || fail "/bin/busybox is missing or not statically linked even after installing busybox-static"
  notes+=("installed ${pkgs[*]}")
fi

# --- dockerd ----------------------------------------------------------------------------------
if docker_answers; then
  notes+=("dockerd already running")
else
  pid=$(cat /var/run/docker.pid 2>/dev/null || true)
  if [ -n "$pid" ] && [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
    # A dockerd that is still starting (or wedged) owns the pidfile; a second one would refuse to start.
    notes+=("waited for starting dockerd $pid")
  else
    # 9>&-: a dockerd inheriting the lock fd would hold the lock for its whole life.
    setsid dockerd >"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
    pid=$!
    notes+=("started dockerd $pid")
  fi
  deadline=$((SECONDS + START_WAIT_S))
  until docker_answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      cp "$DOCKERD_LOG" "$log" 2>/dev/null
      fail "dockerd exited during startup (log: $DOCKERD_LOG)"
    fi
    if [ $SECONDS -ge $deadline ]; then
      cp "$DOCKERD_LOG" "$log" 2>/dev/null
      fail "dockerd did not answer on $SOCK within ${START_WAIT_S}s (pid $pid, log: $DOCKERD_LOG)"
    fi
    sleep 0.5
  done
fi
server_version=$(timeout 10 docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')

# --- swarm ------------------------------------------------------------------------------------
state=$(swarm_state)
if [ "$state" = pending ]; then
  # A join/init in flight settles by itself; give it a moment before deciding.
  for _ in $(seq 1 30); do sleep 1; state=$(swarm_state); [ "$state" = pending ] || break; done
fi
case "$state" in
  active) notes+=("swarm active") ;;
  inactive)
    run 60 "docker swarm init --advertise-addr 127.0.0.1" docker swarm init --advertise-addr 127.0.0.1
    notes+=("swarm initialised")
    ;;
  error)
    # A test machine's swarm in error is not worth repairing: start over as a single-node swarm.
    run 60 "docker swarm leave --force (swarm was in state error)" docker swarm leave --force
    run 60 "docker swarm init --advertise-addr 127.0.0.1" docker swarm init --advertise-addr 127.0.0.1
    notes+=("swarm re-initialised (was error)")
    ;;
  locked) fail "the swarm is locked (autolock); unlock it with 'docker swarm unlock' first" ;;
  *) fail "unexpected swarm state '${state:-<none>}' from docker info" ;;
esac
[ "$(swarm_state)" = active ] || fail "swarm is not active after init (state: $(swarm_state))"

# --- test image -------------------------------------------------------------------------------
if image_present; then
  notes+=("$IMAGE present")
else
  ctx=$(mktemp -d -t skypanel-busybox.XXXXXX)
  busybox_ok || fail "/bin/busybox is missing or not statically linked; cannot build $IMAGE"
  cp /bin/busybox "$ctx/busybox"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
# Exec form: scratch has no shell until busybox installs its applets.
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["sh"]
EOF
  # Legacy builder: works with any CLI/daemon pairing, no buildx plugin needed; the RUN needs no network.
  DOCKER_BUILDKIT=0 run 180 "docker build $IMAGE" docker build --network none -t "$IMAGE" "$ctx"
  run 30 "smoke-test $IMAGE" docker run --rm --network none "$IMAGE" sh -c 'true'
  notes+=("$IMAGE built")
fi

# --- hello image: what `dev` seeds and the panel e2e deploys ------------------------------------
# SkyPanelV2's rows hold an image tag but no command, so the program must be the image's own CMD:
# serve $GREETING (or a fixed line) over HTTP on 8080. Built on the local busybox image: no pull.
if hello_present; then
  notes+=("$HELLO_IMAGE present")
else
  [ -n "$ctx" ] && rm -rf "$ctx"
  ctx=$(mktemp -d -t skypanel-hello.XXXXXX)
  cat >"$ctx/Dockerfile" <<EOF
FROM $IMAGE
CMD ["sh", "-c", "mkdir -p /www && echo \"\${GREETING:-hello from skypanel-agent}\" > /www/index.html && exec httpd -f -p 8080 -h /www"]
EOF
  DOCKER_BUILDKIT=0 run 120 "docker build $HELLO_IMAGE" docker build --network none -t "$HELLO_IMAGE" "$ctx"
  notes+=("$HELLO_IMAGE built")
fi

ms=$((($(date +%s%N) - t0) / 1000000))
summary=$(IFS=,; echo "${notes[*]}" | sed 's/,/, /g')
echo "ensure-docker: ready in $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s (dockerd $server_version: $summary)"
