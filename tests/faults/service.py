#!/usr/bin/env python3
"""The service under test in the fault suite: a writer to the ledger.

Tandem runs it on the nodes as a supervised `exec` process. It reads
TANDEM_EPOCH, TANDEM_NODE and TANDEM_GROUP, connects to the ledger
(ledger.py, address in argv[1]), announces itself ("hello"), then writes
about every 50 ms. Each message waits for the ledger's answer:

* "stale N": the ledger accepted a newer epoch for this group, so this
  writer is fenced; it says so on stderr and exits 3, like a storage client
  that lost its lease would.
* SIGTERM (Tandem's stop): it announces its stop ("stop") and exits 0.

SIGTERM is blocked and looked for between messages, so a stop never cuts a
message in half. A lost connection is retried every 200 ms.

Its life, for the checker, goes to LIVES (a file on the machine, not over the
network, so a cut link hides nothing): first a "start" line with the moment
the process was created (from /proc/self/stat, on CLOCK_MONOTONIC, rounded
down to the kernel's tick: the start action's first moment, a little early
rather than late); the test harness adds the moment it died (a pidfd).

Usage: service.py LEDGER_HOST:PORT LIVES
"""

import json
import os
import signal
import socket
import sys
import time

INTERVAL = 0.05
REPLY_TIMEOUT = 1.0


class Stale(Exception):
    pass


def born_monotonic():
    """When this process was created, on CLOCK_MONOTONIC, rounded down to a tick."""
    with open("/proc/self/stat") as f:
        # The command name (field 2) may hold spaces: count after its ")".
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[19])  # field 22, starttime: ticks since boot
    since_boot = ticks / os.sysconf("SC_CLK_TCK")
    offset = time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
    return since_boot - offset


def note_life(path, rec):
    # One write of one line with O_APPEND: lines of several writers never mix.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(rec, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    ident = {
        "node": os.environ["TANDEM_NODE"],
        "group": os.environ["TANDEM_GROUP"],
        "epoch": int(os.environ["TANDEM_EPOCH"]),
        "pid": os.getpid(),
    }
    note_life(sys.argv[2], dict(ident, type="start", born=born_monotonic(), t=time.monotonic()))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    seq = [0]
    conn = [None, None]  # socket, reader

    def terminated(wait):
        # Not sigtimedwait: after a SIGSTOP/SIGCONT it fails with EINTR, and
        # CPython then returns a siginfo of garbage once the timeout passed,
        # as if a signal had come. A plain sleep, then a look at what is
        # pending (SIGTERM stays blocked, so it waits there).
        time.sleep(wait)
        return signal.SIGTERM in signal.sigpending()

    def send(kind):
        """Sends one message and waits for the verdict; False on a lost connection."""
        if conn[0] is None:
            try:
                sock = socket.create_connection((host, int(port)), timeout=REPLY_TIMEOUT)
            except OSError:
                return False
            sock.settimeout(REPLY_TIMEOUT)
            conn[0], conn[1] = sock, sock.makefile("rb")
            if kind != "hello" and not send("hello"):
                return False
        seq[0] += 1
        msg = dict(ident, type=kind, seq=seq[0])
        try:
            conn[0].sendall((json.dumps(msg) + "\n").encode())
            reply = conn[1].readline().decode().strip()
        except OSError:
            reply = ""
        if not reply:
            conn[0].close()
            conn[0] = conn[1] = None
            return False
        if reply.startswith("stale"):
            raise Stale(reply)
        return True

    try:
        while not send("hello"):
            if terminated(0.2):
                return 0
        while True:
            if terminated(INTERVAL):
                try:
                    send("stop")
                except Stale:
                    pass
                return 0
            if not send("write") and terminated(0.2):
                return 0
    except Stale as e:
        print("refused by the ledger (%s): epoch %d is fenced, stopping" % (e, ident["epoch"]),
              file=sys.stderr, flush=True)
        return 3


if __name__ == "__main__":
    sys.exit(main())
