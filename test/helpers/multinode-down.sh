#!/usr/bin/env bash
# multinode-down.sh SLOT_DIR: tears down one swarm worker node made by test/helpers/multinode.ts,
# in the reverse order of its bring-up. Idempotent (every step tolerates "already gone"), safe to
# run on a half-built node or a stale one left by a killed test process, and every step is bounded.
# Touches only what this slot created: the names come from SLOT_DIR/slot.env, written before the
# first thing was created. Never touches the manager node, its dockerd, or anything not pinned to
# this slot's node.
set -u
D=${1:?usage: $0 SLOT_DIR}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export DOCKER_HOST=unix:///var/run/docker.sock
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
T="timeout -k 2"

if [ ! -f "$D/slot.env" ]; then rm -rf --one-file-system "$D"; exit 0; fi
# NS HIF SOCK PIDFILE CGROUP
. "$D/slot.env"
NODE_ID=$(cat "$D/node.id" 2>/dev/null || true)

# 1. Services pinned to this node: nobody else can have created them (the node id is ours alone).
#    One inspect for all services: the shared manager may hold hundreds of other people's.
if [ -n "$NODE_ID" ]; then
  ids=$($T 15 docker service ls -q 2>/dev/null)
  if [ -n "$ids" ]; then
    pinned=$($T 30 docker service inspect -f '{{.ID}} {{json .Spec.TaskTemplate.Placement.Constraints}}' $ids 2>/dev/null | grep -F "\"node.id==$NODE_ID\"" | cut -d' ' -f1)
    [ -n "$pinned" ] && $T 30 docker service rm $pinned >/dev/null 2>&1
  fi
fi

# 2. The worker leaves the swarm (if its dockerd still answers), then its dockerd stops.
[ -S "$SOCK" ] && $T 10 docker -H "unix://$SOCK" swarm leave --force >/dev/null 2>&1
if [ -f "$PIDFILE" ]; then
  p=$(cat "$PIDFILE" 2>/dev/null || true)
  if [ -n "$p" ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = dockerd ]; then
    kill -TERM "$p" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  fi
fi

# 3. Whatever is left of the node: processes in its network namespace (containerd, shims) and in
#    its cgroup parent (task containers, which have network namespaces of their own).
kill_rest() {
  local pids=""
  [ -e "/run/netns/$NS" ] && pids=$($T 5 ip netns pids "$NS" 2>/dev/null)
  for f in /sys/fs/cgroup/*/"$CGROUP"; do
    [ -d "$f" ] && pids="$pids $(find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null)"
  done
  pids=$(echo $pids)
  [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
  [ -n "$pids" ]
}
for _ in 1 2 3 4 5; do kill_rest || break; sleep 0.2; done

# 4. The manager forgets the node.
[ -n "$NODE_ID" ] && $T 15 docker node rm --force "$NODE_ID" >/dev/null 2>&1

# 5. Links, namespace, cgroups, files.
ip link del "$HIF" 2>/dev/null
[ -e "/run/netns/$NS" ] && ip netns del "$NS" 2>/dev/null
for f in /sys/fs/cgroup/*/"$CGROUP"; do
  [ -d "$f" ] && find "$f" -depth -type d -exec rmdir {} + 2>/dev/null
done
# dockerd's mounts live in its own mount namespace, gone with it; refuse to delete through a leftover one.
if ! grep -q " $D/" /proc/mounts; then rm -rf --one-file-system "$D"; fi
exit 0
