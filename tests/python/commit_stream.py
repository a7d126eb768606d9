"""A stream of commits from several stock ZEO clients, for the RAID fault tests.

usage: commit_stream.py HOST:PORT CLIENTS OUTDIR [MAX_SECONDS [NAME [RATE]]]

Starts CLIENTS threads, each with its own ZODB.DB over its own ZEO ClientStorage (one
connection each), each committing changes to an object of its own (so no conflicts) as fast as
it can, until the file OUTDIR/stop appears or MAX_SECONDS (default 120) have passed. The objects
are the root's NAME-0, NAME-1, ... (NAME defaults to `stream`): several streams with other
names can run at once (their set-up commits, which change the root, retry on a conflict).
RATE (commits per second per client, default 0: as fast as it can) paces the clients.

Every acknowledged commit (transaction.commit() returned) is appended at once to
OUTDIR/commits.jsonl as {"client": i, "n": k, "tid": HEX, "t": unix time}, so the test can watch
the stream while it runs. Any exception in a client is appended as {"client": i, "error": TEXT}
and ends that client. At the end it prints {"commits": N, "errors": N} and writes
OUTDIR/acknowledged.json = {"last_tid": null, "tids": [HEX, ...]} (the `--front` file of
compare_backends.py); it exits 0 only when no client saw an error.
"""

import json
import os
import random
import sys
import threading
import time
import traceback

import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZODB.POSException import ConflictError
from ZEO.ClientStorage import ClientStorage


def main(argv):
    host, _, port = argv[1].rpartition(":")
    clients = int(argv[2])
    out = argv[3]
    max_seconds = float(argv[4]) if len(argv) > 4 else 120.0
    name = argv[5] if len(argv) > 5 else "stream"
    rate = float(argv[6]) if len(argv) > 6 else 0.0
    pause = 1.0 / rate if rate > 0 else 0.0
    stop_file = os.path.join(out, "stop")
    log = open(os.path.join(out, "commits.jsonl"), "a", buffering=1)
    lock = threading.Lock()
    tids = []
    errors = [0]
    deadline = time.monotonic() + max_seconds

    def write(record):
        with lock:
            log.write(json.dumps(record) + "\n")

    # One set-up commit creates every client's object (no conflicts on the root later; another
    # stream's set-up may conflict with it: retried).
    db = ZODB.DB(ClientStorage((host, int(port)), wait_timeout=30))
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    for attempt in range(50):
        tm.begin()
        for i in range(clients):
            conn.root()[f"{name}-{i}"] = PersistentMapping(n=0)
        try:
            tm.commit()
            break
        except ConflictError:
            tm.abort()
            time.sleep(0.05 * random.random())
    else:
        raise RuntimeError("the set-up commit kept conflicting")
    conn.close()
    db.close()

    def client(i):
        try:
            db = ZODB.DB(ClientStorage((host, int(port)), wait_timeout=30))
            tm = transaction.TransactionManager()
            conn = db.open(transaction_manager=tm)
            tm.begin()
            obj = conn.root()[f"{name}-{i}"]
            n = 0
            next_at = time.monotonic()
            while not os.path.exists(stop_file) and time.monotonic() < deadline:
                if pause:
                    next_at += pause
                    time.sleep(max(0.0, next_at - time.monotonic()))
                n += 1
                obj["n"] = n
                tm.get().note(f"{name} client {i} commit {n}")
                tm.commit()
                tid = obj._p_serial.hex()
                with lock:
                    tids.append(tid)
                write({"client": i, "n": n, "tid": tid, "t": time.time()})
                tm.begin()
            conn.close()
            db.close()
        except Exception as e:
            with lock:
                errors[0] += 1
            write({"client": i, "error": f"{type(e).__name__}: {e}"})
            traceback.print_exc()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(os.path.join(out, "acknowledged.json"), "w") as f:
        json.dump({"last_tid": None, "tids": sorted(tids)}, f)
    print(json.dumps({"commits": len(tids), "errors": errors[0]}))
    return 0 if errors[0] == 0 else 1


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
