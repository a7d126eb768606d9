"""Benchmark Python's FileStorage on this machine; print the figures as JSON.

usage: bench_fs.py [N] [--quick] [--seconds S] [--object-size BYTES] [--lookups M] [--rounds R]
                   [--commits LIST] [--no-read] [--dir DIR]

Measures, through the storage API itself (no Connection, no pickling of application objects; the
records are ready-made ZODB pickles of a PersistentMapping holding OBJECT_SIZE bytes):

  commits     commits per second of 1 and of 10 objects per transaction, with fsync on and off,
              each for S seconds (default 3; 1 with --quick), and the per-commit latency;
  read_db     the time to write a database of N objects (default 1,000,000; 20,000 with --quick)
              in transactions of 1,000 objects, fsync off;
  load_before loadBefore(oid, maxtid)/s for M random oids (fixed seed; default 200,000, 20,000
              with --quick) of that database, right after writing it (page cache warm);
  open        the time to open that database read-only with its .index and without it (a full
              scan), each in a fresh child process, and the RSS growth of that process during
              the open: the in-memory index (fsIndex) is what grows, so this is the index's size.

How FileStorage decides to fsync: FileStorage.py binds `fsync = getattr(os, "fsync", None)` at
import time and calls it exactly once per commit, in tpc_finish (`_finish_finish`), after the
transaction's status byte is written and the file flushed; there is no option to turn it off.
For "fsync off" this script replaces that module global with a no-op (and os.fsync too): patching
os.fsync alone after the import would not change anything. With fsync on, the script counts the
calls through a wrapper, to show the figure measured is one fsync per commit.

With --rounds R (default 1) every commit benchmark, the load_before run and each open is repeated
R times and the best figure is kept (the machine is shared and noisy); all of them are reported.

--commits LIST runs only the listed commit benchmarks (comma-separated `1:on`, `1:off`, `10:on`,
`10:off`; `none` for none) and --no-read skips the read database (read_db, load_before and open
are then null): a caller can interleave its own measurements with Python's, so that both see
the same background load (fsync latency in particular varies with the other I/O of the machine).

Run time: about 5 s with --quick; with N=1,000,000 and 1 KiB objects, a few minutes (the database
is about 1.1 GB, written to DIR, default a fresh temporary directory removed at the end).
"""

import argparse
import importlib
import json
import os
import pickle
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import ZODB
from persistent.mapping import PersistentMapping
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.utils import maxtid
from ZODB.utils import p64
from ZODB.utils import z64

# The module (its name is shadowed by the class in the ZODB.FileStorage package).
fs_module = importlib.import_module("ZODB.FileStorage.FileStorage")
BATCH = 1000
SEED = 20240601


def record(payload):
    """A ZODB record as ZODB.serialize writes it: the class, then the state."""
    return pickle.dumps(PersistentMapping, 3) + pickle.dumps({"data": {"payload": payload}}, 3)


def payloads(count, size, seed):
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(count)]


class FsyncSwitch:
    """Turns FileStorage's fsync off (a no-op) or on (the real one, counted)."""

    def __init__(self):
        self.real = fs_module.fsync
        self.real_os = os.fsync
        self.calls = 0

    def _counted(self, fd):
        self.calls += 1
        self.real(fd)

    def set(self, on):
        if on:
            fs_module.fsync = self._counted
            os.fsync = self.real_os
        else:
            fs_module.fsync = os.fsync = lambda fd: None
        self.calls = 0


def commit(storage, stores):
    meta = TransactionMetaData()
    storage.tpc_begin(meta)
    for oid, serial, data in stores:
        storage.store(oid, serial, data, "", meta)
    storage.tpc_vote(meta)
    return storage.tpc_finish(meta)


def bench_commits(work_dir, objects_per_commit, fsync_on, seconds, object_size, switch):
    path = os.path.join(work_dir, f"commits-{objects_per_commit}-{'on' if fsync_on else 'off'}.fs")
    storage = FileStorage(path, create=True)
    try:
        datas = [record(p) for p in payloads(64, object_size, SEED)]
        oids = [storage.new_oid() for _ in range(objects_per_commit)]
        serials = {oid: z64 for oid in oids}
        switch.set(fsync_on)
        latencies = []
        n = 0
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            tid = commit(storage, [(oid, serials[oid], datas[(n + i) % len(datas)])
                                   for i, oid in enumerate(oids)])
            latencies.append(time.perf_counter() - t0)
            for oid in oids:
                serials[oid] = tid
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and n >= 10:
                break
        fsyncs = switch.calls
        switch.set(False)
    finally:
        storage.close()
        storage.cleanup()
    latencies.sort()
    return {
        "objects_per_commit": objects_per_commit,
        "fsync": fsync_on,
        "commits": n,
        "seconds": round(elapsed, 3),
        "commits_per_s": round(n / elapsed, 1),
        "objects_per_s": round(n * objects_per_commit / elapsed, 1),
        "latency_us": {
            "p50": round(statistics.median(latencies) * 1e6, 1),
            "p99": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e6, 1),
        },
        "fsync_calls": fsyncs if fsync_on else 0,
    }


def build_read_db(path, n, object_size, switch):
    switch.set(False)
    datas = [record(p) for p in payloads(256, object_size, SEED + 1)]
    start = time.perf_counter()
    storage = FileStorage(path, create=True)
    try:
        oid = 0
        while oid < n:
            stores = []
            for _ in range(min(BATCH, n - oid)):
                stores.append((p64(oid), z64, datas[oid % len(datas)]))
                oid += 1
            commit(storage, stores)
        seconds = time.perf_counter() - start
        size = storage.getSize()
    except BaseException:
        storage.close()
        raise
    return storage, {"objects": n, "transactions": -(-n // BATCH), "object_size": object_size,
                     "file_bytes": size, "build_seconds": round(seconds, 2), "fsync": False}


def best_of(rounds, run, key):
    """Runs run() ROUNDS times; returns the result with the smallest key, and every key."""
    results = [run() for _ in range(rounds)]
    return min(results, key=key), [key(r) for r in results]


def bench_load_before(storage, n, lookups, rounds=1):
    rng = random.Random(SEED)
    oids = [p64(rng.randrange(n)) for _ in range(lookups)]
    load_before = storage.loadBefore

    def run():
        start = time.perf_counter()
        for oid in oids:
            load_before(oid, maxtid)
        return time.perf_counter() - start

    seconds, all_seconds = best_of(rounds, run, lambda s: s)
    return {"rounds_seconds": [round(s, 3) for s in all_seconds],
            "calls": lookups, "seconds": round(seconds, 3), "per_s": round(lookups / seconds, 1),
            "us_per_call": round(seconds / lookups * 1e6, 2), "tid": "maxtid",
            "oids": f"uniform random, seed {SEED}", "page_cache": "warm (database just written)"}


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def child_open(path):
    """Run in a fresh process: open PATH read-only, report the time and the RSS growth."""
    before = rss_bytes()
    start = time.perf_counter()
    storage = FileStorage(path, read_only=True)
    seconds = time.perf_counter() - start
    after = rss_bytes()
    result = {"seconds": round(seconds, 3), "used_index": bool(storage._used_index),
              "len": len(storage), "rss_before": before, "rss_after": after,
              "rss_growth": after - before if before is not None else None}
    storage.close()
    print(json.dumps(result))


def measure_open(path, rounds=1):
    def run():
        out = subprocess.run([sys.executable, __file__, "--child-open", path],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)

    best, all_seconds = best_of(rounds, run, lambda r: r["seconds"])
    best["rounds_seconds"] = all_seconds
    return best


def bench_open(path, rounds=1):
    index = path + ".index"
    with_index = measure_open(path, rounds)
    index_bytes = os.path.getsize(index)
    os.rename(index, index + ".aside")
    try:
        without_index = measure_open(path, rounds)
    finally:
        os.rename(index + ".aside", index)
    n = with_index["len"]
    growth = without_index["rss_growth"]
    return {
        "with_index": with_index,
        "without_index": without_index,
        "index_file_bytes": index_bytes,
        "index_rss_bytes": growth,
        "index_rss_bytes_per_object": round(growth / n, 1) if growth and n else None,
        "note": "index_rss_bytes is the RSS growth of a fresh process opening without .index "
                "(the scan builds the fsIndex in memory; the open with .index loads the same "
                "fsIndex and grows by about as much)",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n", nargs="?", type=int, help="objects in the read database")
    parser.add_argument("--quick", action="store_true", help="small N and short runs")
    parser.add_argument("--seconds", type=float, help="duration of each commit benchmark")
    parser.add_argument("--object-size", type=int, default=1024)
    parser.add_argument("--lookups", type=int)
    parser.add_argument("--rounds", type=int, default=1, help="repeat each measurement, keep the best")
    parser.add_argument("--commits", default="1:on,1:off,10:on,10:off",
                        help="commit benchmarks to run, e.g. 1:on,10:off, or none")
    parser.add_argument("--no-read", action="store_true", help="skip the read database")
    parser.add_argument("--dir", help="work directory (default: a fresh temporary one)")
    parser.add_argument("--child-open", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_open:
        child_open(args.child_open)
        return

    n = args.n or (20_000 if args.quick else 1_000_000)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    lookups = args.lookups or (20_000 if args.quick else 200_000)
    work_dir = args.dir or tempfile.mkdtemp(prefix="bench_fs-")
    os.makedirs(work_dir, exist_ok=True)
    switch = FsyncSwitch()
    started = time.perf_counter()
    try:
        commits = []
        wanted = [] if args.commits == "none" else args.commits.split(",")
        for config in wanted:
            k, _, fsync = config.partition(":")
            k, on = int(k), {"on": True, "off": False}[fsync]
            best, all_rates = best_of(
                args.rounds,
                lambda: bench_commits(work_dir, k, on, seconds, args.object_size, switch),
                lambda r: -r["commits_per_s"])
            best["rounds_commits_per_s"] = [-r for r in all_rates]
            commits.append(best)
        read_db = load_before = opened = None
        if not args.no_read:
            path = os.path.join(work_dir, "read.fs")
            storage, read_db = build_read_db(path, n, args.object_size, switch)
            try:
                load_before = bench_load_before(storage, n, lookups, args.rounds)
            finally:
                storage.close()  # writes read.fs.index
            opened = bench_open(path, args.rounds)
    finally:
        if not args.dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    result = {
        "python": platform.python_version(),
        "zodb": getattr(ZODB, "__version__", None) or _version("ZODB"),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "rounds": args.rounds,
        "object_size": args.object_size,
        "fsync": {
            "how_zodb_decides": "FileStorage.py binds fsync = getattr(os, 'fsync', None) at import "
                                "and calls it once per commit in tpc_finish (_finish_finish); "
                                "there is no switch",
            "off": "ZODB.FileStorage.FileStorage.fsync (and os.fsync) replaced by a no-op",
        },
        "commits": commits,
        "read_db": read_db,
        "load_before": load_before,
        "open": opened,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")


def _version(dist):
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
