#!/usr/bin/env bash
# multinode-reap.sh PREFIX: removes the services, then the networks and secrets, whose
# skypanel.organization.id label starts with PREFIX. Multinode tests give every organization
# they use that prefix (MULTINODE_ORG_PREFIX), and only one multinode test process runs at a
# time (the session lock), so whatever carries it belongs to the current run or to a killed one.
# Idempotent; every step bounded.
set -u
P=${1:?usage: $0 PREFIX}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export DOCKER_HOST=unix:///var/run/docker.sock
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
T="timeout -k 2"
L=skypanel.organization.id
mine() { # KIND: ids of KIND (service|network|secret) labelled with an organization starting with $P
  local ids; ids=$($T 15 docker "$1" ls -q --filter "label=$L" 2>/dev/null)
  [ -n "$ids" ] || return 0
  $T 30 docker "$1" inspect -f "{{.ID}} {{index .Spec.Labels \"$L\"}}" $ids 2>/dev/null | awk -v p="$P" 'index($2, p) == 1 { print $1 }'
}
s=$(mine service); [ -n "$s" ] && $T 30 docker service rm $s >/dev/null 2>&1
# Networks: inspect has no .Spec; their labels sit at the top level.
n=$($T 15 docker network ls -q --filter "label=$L" 2>/dev/null)
if [ -n "$n" ]; then
  n=$($T 30 docker network inspect -f "{{.Id}} {{index .Labels \"$L\"}}" $n 2>/dev/null | awk -v p="$P" 'index($2, p) == 1 { print $1 }')
  # A network is released only once its tasks are gone: retry for a few seconds.
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    [ -n "$n" ] || break
    left=""
    for id in $n; do $T 15 docker network rm "$id" >/dev/null 2>&1 || { $T 10 docker network inspect "$id" >/dev/null 2>&1 && left="$left $id"; }; done
    n=$left; [ -n "$n" ] && sleep 1
  done
fi
x=$(mine secret); [ -n "$x" ] && $T 30 docker secret rm $x >/dev/null 2>&1
exit 0
