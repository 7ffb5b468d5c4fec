#!/usr/bin/env python3
"""The fault suite's ledger: a stand-in for the storage a service writes to.

It runs on the test's client host and listens on TCP. Services (service.py,
run by Tandem on the nodes) send one JSON object per line:

    {"type": "hello" | "write" | "stop", "node": ..., "group": ..., "epoch": N,
     "pid": P, "seq": K}

and get one line back: "ok", or "stale NEWEST" when the message's epoch is
older than the newest epoch the ledger has accepted for that group (the
fencing token: a stale writer is refused, and stops itself).

Every message is appended to the output file as one JSON line, with the
ledger's own receive time `t` (time.monotonic(), CLOCK_MONOTONIC, seconds:
the same clock the test reads, so fault times and ledger times compare),
the verdict ("accepted" or "refused") and the group's newest accepted epoch.
A record is written and flushed before the reply is sent, under one lock, so
the file is in receive order.

Usage: ledger.py --listen HOST:PORT --out FILE
"""

import argparse
import json
import socket
import sys
import threading
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, int(port)))
    server.listen(64)
    # The file appears only once the ledger listens: the test waits for it.
    out = open(args.out, "a", buffering=1, encoding="utf-8")
    lock = threading.Lock()
    newest = {}

    def record(rec):
        out.write(json.dumps(rec, sort_keys=True) + "\n")
        out.flush()

    def handle(conn, peer):
        peer = "%s:%d" % peer
        reader = conn.makefile("rb")
        try:
            for raw in reader:
                try:
                    msg = json.loads(raw)
                    group = str(msg["group"])
                    epoch = int(msg["epoch"])
                except (ValueError, KeyError, TypeError):
                    with lock:
                        record({"t": time.monotonic(), "type": "garbage", "peer": peer,
                                "raw": raw.decode("utf-8", "replace")})
                    conn.sendall(b"error\n")
                    continue
                with lock:
                    t = time.monotonic()
                    prev = newest.get(group)
                    accepted = prev is None or epoch >= prev
                    if accepted:
                        newest[group] = epoch
                    rec = dict(msg)
                    rec.update(t=t, peer=peer, verdict="accepted" if accepted else "refused",
                               newest=newest[group])
                    record(rec)
                    reply = "ok\n" if accepted else "stale %d\n" % newest[group]
                conn.sendall(reply.encode())
        except OSError:
            pass
        finally:
            with lock:
                record({"t": time.monotonic(), "type": "closed", "peer": peer})
            conn.close()

    print("ledger listening on %s, writing %s" % (args.listen, args.out), flush=True)
    while True:
        conn, peer = server.accept()
        threading.Thread(target=handle, args=(conn, peer), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
