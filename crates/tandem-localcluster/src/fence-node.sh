#!/bin/sh
# Written by `tandem demo`. A stand-in for a power switch, fit ONLY for a
# cluster whose nodes all run on one machine in LocalCluster's layout
# (DIR/NODE.toml, DIR/NODE-data/run/GROUP/RESOURCE.pid, this file in DIR).
# In production use a real fence agent (fence_ipmilan, fence_apc...).
#
# Usage (as an exec fence device): fence-node.sh NODE, protocol lines on stdin.
# The node's processes are its agent (`agent --config DIR/NODE.toml`), every
# process the agent started (its descendants) and every process of the
# process groups its service pid files name. Zombies count as gone.
#   off, reboot  SIGKILL every one of them, pid by pid, until none remains:
#                exit 0 only then, 1 (with the reason) when some remain.
#   status       exit 2 (off) when none remains, 0 (on) when some do.
#   on, monitor  exit 0.
set -u
node="${1:?usage: fence-node.sh NODE}"
dir=$(cd "$(dirname "$0")" && pwd) || exit 1
action=$(sed -n 's/^action=//p' | tail -n 1)
[ -n "$action" ] || action="${TANDEM_FENCE_ACTION:-}"
config="$dir/$node.toml"
run="$dir/$node-data/run"

# The pids of the node's processes that still run, one a line.
node_pids() {
  groups=" "
  for f in "$run"/*/*.pid; do
    [ -f "$f" ] || continue
    read -r pgid _ 2> /dev/null < "$f" || continue
    case "$pgid" in '' | *[!0-9]*) continue ;; esac
    groups="$groups$pgid "
  done
  agents=" "
  for f in $(grep -l -a -F -e "$config" /proc/[0-9]*/cmdline 2> /dev/null); do
    p=${f#/proc/}
    cmd=$(tr '\0' ' ' 2> /dev/null < "$f") || continue
    case "$cmd" in *" agent --config $config "*) agents="$agents${p%/cmdline} " ;; esac
  done
  # Every process: pid, then (after the command name) state, ppid, pgrp.
  cat /proc/[0-9]*/stat 2> /dev/null | awk -v agents="$agents" -v groups="$groups" -v me="$$" '
    {
      n = split($0, part, ") ")
      split(part[n], f, " ")
      state[$1] = f[1]; ppid[$1] = f[2]; pgrp[$1] = f[3]
    }
    END {
      for (p in state) {
        if (state[p] == "Z" || state[p] == "X" || p == me) continue
        mine = index(groups, " " pgrp[p] " ") > 0
        q = p
        for (n = 0; !mine && (q in ppid) && q + 0 > 1 && n < 1000; n++) {
          if (index(agents, " " q " ") > 0) mine = 1
          q = ppid[q]
        }
        if (mine) print p
      }
    }'
}

case "$action" in
  off | reboot)
    errors=""
    round=0
    while :; do
      pids=$(node_pids) || { echo "cannot list the processes of $node" >&2; exit 1; }
      if [ -z "$pids" ]; then
        echo "$node is off: no process of it remains (killed in $round rounds)"
        exit 0
      fi
      round=$((round + 1))
      if [ "$round" -gt 20 ]; then
        echo "cannot switch $node off: still running after 20 rounds of SIGKILL:" $pids "$errors" >&2
        exit 1
      fi
      errors=""
      for pid in $pids; do
        # A process that ended meanwhile is fine; the next round sees any other error.
        err=$(kill -s KILL "$pid" 2>&1) || errors="$errors (kill $pid: $err)"
      done
      sleep 0.1
    done
    ;;
  status)
    pids=$(node_pids) || { echo "cannot list the processes of $node" >&2; exit 1; }
    if [ -z "$pids" ]; then
      echo "$node is off: no process of it remains"
      exit 2
    fi
    echo "$node is on: processes" $pids "remain"
    exit 0
    ;;
  on | monitor) exit 0 ;;
  *)
    echo "unsupported action: $action" >&2
    exit 1
    ;;
esac
