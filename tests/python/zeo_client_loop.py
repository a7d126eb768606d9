"""A single-threaded stock ZEO client loop, to sanity-check zeoraid-load's figures.

    python zeo_client_loop.py HOST:PORT [SECONDS [START]]

START (a Unix time) lets several copies start their commit loops at the same moment.

Commits: a ZODB DB over ClientStorage; each transaction changes one PersistentMapping of
~100 bytes (as zeoraid-load's default commits workload: one object per transaction). Loads:
`loadBefore(oid, maxtid)` of random oids among 1000 objects, sent as raw calls through the
client's connection (`ClientStorage._server.call`) so that the client cache does not answer.
Prints one JSON line per workload: ops/s, p50 and p99 latency in microseconds.
"""

import json
import os
import random
import sys
import time

import transaction
import ZEO
from persistent.mapping import PersistentMapping
from ZODB import POSException
from ZODB.utils import maxtid


def summary(name, lat, seconds):
    lat.sort()
    pct = lambda p: lat[max(0, -(-len(lat) * p // 100) - 1)] * 1e6 if lat else None
    print(json.dumps({"workload": name, "clients": 1, "ops": len(lat),
                      "ops_per_s": round(len(lat) / seconds, 1),
                      "p50_us": round(pct(50), 1), "p99_us": round(pct(99), 1)}))


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    # Several copies may run at once (one client each): the set-up retries conflicts on the
    # root, and each copy works on objects of its own.
    for attempt in range(20):
        try:
            db = ZEO.DB((host, int(port)))
            break
        except POSException.ConflictError:
            time.sleep(0.1 * random.random())
    conn = db.open()
    root = conn.root()
    obj = PersistentMapping({"payload": b"x" * 14})
    objs = [PersistentMapping({"payload": b"y" * 14}) for _ in range(1000)]
    for attempt in range(20):
        try:
            root["loop-%d" % os.getpid()] = (obj, objs)
            transaction.commit()
            break
        except POSException.ConflictError:
            transaction.abort()
            time.sleep(0.1 * random.random())
    oids = [o._p_oid for o in objs]

    if len(sys.argv) > 3:
        time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
    lat, end, i = [], time.perf_counter() + seconds, 0
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        i += 1
        obj["payload"] = i.to_bytes(14, "big")
        transaction.commit()
        lat.append(time.perf_counter() - t0)
    summary("commits", lat, seconds)

    server = db.storage._server
    lat, end = [], time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        server.call("loadBefore", random.choice(oids), maxtid)
        lat.append(time.perf_counter() - t0)
    summary("loads", lat, seconds)
    conn.close()
    db.close()


if __name__ == "__main__":
    main()
