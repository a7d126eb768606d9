#!/usr/bin/env python3
"""Write seed corpora for the fuzz targets from the recorded ZEO sessions.

Usage (from the repository root):  python3 fuzz/make_seeds.py
Writes fuzz/corpus/<target>/<name> files, which `cargo fuzz run <target>` picks up.
"""
import glob
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = os.path.join(ROOT, "core", "tests", "vectors")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    counts = {}
    for path in sorted(glob.glob(os.path.join(VECTORS, "*.jsonl"))):
        base = os.path.basename(path)[: -len(".jsonl")]
        stream = {}
        for line in open(path):
            rec = json.loads(line)
            if rec.get("kind") != "frame":
                continue
            payload = bytes.fromhex(rec["hex"])
            name = f"{base}-c{rec['conn']}-{rec['dir']}-{rec['seq']}"
            enc = rec["encoding"]
            target = {"msgpack": "msgpack", "pickle": "pickle"}.get(enc, "handshake")
            if len(payload) <= 4096:  # keep the corpus small; big blob chunks add nothing
                write(target, name, payload)
                counts[target] = counts.get(target, 0) + 1
            key = (rec["conn"], rec["dir"])
            stream.setdefault(key, bytearray()).extend(struct.pack(">I", len(payload)) + payload)
        for (conn, direction), data in stream.items():
            # first byte: chunk size selector used by the frames body
            write("frames", f"{base}-c{conn}-{direction}", bytes([len(data) % 17]) + bytes(data[:8192]))
            counts["frames"] = counts.get("frames", 0) + 1
    for t, n in sorted(counts.items()):
        print(f"{t}: {n} seeds")


if __name__ == "__main__":
    main()
