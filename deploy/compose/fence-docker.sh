#!/bin/sh
# An exec fence device for the compose cluster: a node is a container, and
# "powering it off" is killing the container through the Docker Engine API
# on /var/run/docker.sock (mounted into every node: any voter may become
# coordinator and fence). Parameters on stdin, as Tandem passes them:
# action=off|on|reboot|status|monitor, nodename=NODE, container=NAME.
# status reads the container's real state back: 0 running, 2 not running,
# 1 when the engine does not answer. Needs curl.
set -u
action= container=
while IFS='=' read -r key value; do
  case "$key" in
    action) action=$value ;;
    container) container=$value ;;
  esac
done
api() { curl -sS --fail-with-body --max-time 10 --unix-socket /var/run/docker.sock "$@"; }
# 0 running, 2 not running, 1 unknown.
state() {
  json=$(api "http://localhost/containers/$container/json") || return 1
  case "$json" in
    *'"Running":true'*) return 0 ;;
    *'"Running":false'*) return 2 ;;
    *) return 1 ;;
  esac
}
if [ "$action" = monitor ]; then
  api http://localhost/_ping >/dev/null
  exit $?
fi
[ -n "$container" ] || { echo "no container parameter" >&2; exit 1; }
case "$action" in
  off|reboot)
    # 409: it was not running.
    code=$(curl -sS --max-time 10 --unix-socket /var/run/docker.sock -o /dev/null -w '%{http_code}' \
      -X POST "http://localhost/containers/$container/kill?signal=KILL") || exit 1
    case "$code" in 204|409) ;; *) echo "killing $container: HTTP $code" >&2; exit 1 ;; esac
    state; rc=$?
    [ "$rc" -eq 2 ] || { echo "$container is still running (or its state is unknown)" >&2; exit 1; }
    if [ "$action" = reboot ]; then
      api -X POST "http://localhost/containers/$container/start" >/dev/null || exit 1
    fi
    exit 0
    ;;
  on)
    api -X POST "http://localhost/containers/$container/start" >/dev/null
    ;;
  status)
    state
    ;;
  *)
    echo "unknown action $action" >&2
    exit 1
    ;;
esac
