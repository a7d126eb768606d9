"""Check a Data.fs with ZODB's own tools; exit non-zero with the reason when anything is wrong.

usage: check_fs.py PATH [--blobs DIR]

Checks, in order (the first failure stops the run):

  fstest     ZODB.scripts.fstest.check: the file's structure, record by record (headers,
             lengths, redundant lengths, tids increasing, back-pointers in range).
  index      the index FileStorage builds by scanning the file equals the saved PATH.index,
             when there is one for the whole file (zeoraid never writes one, but Python does on
             close); one saved at another file length is reported as "index-stale" and not
             compared, since FileStorage itself then scans past it or ignores it.
  iterator   every transaction and record can be read back with FileStorage's iterator, and
             every back-pointer resolves.
  fsrefs     ZODB.scripts.fsrefs: every current object loads and refers only to objects that
             exist (its report must be empty).
  fsdump     ZODB.FileStorage.fsdump runs through the whole file.
  blobs      (with --blobs) every blob record written with data has its blob file.

On success prints one JSON line: {"ok": true, "checks": [...], "transactions": n, "records": n}.
"""

import argparse
import contextlib
import io
import json
import os
import sys

from ZODB.blob import FilesystemHelper
from ZODB.blob import is_blob_record
from ZODB.FileStorage import FileStorage
from ZODB.FileStorage.FileStorage import read_index
from ZODB.FileStorage.fsdump import fsdump
from ZODB.fsIndex import fsIndex
from ZODB.scripts import fsrefs
from ZODB.scripts import fstest


class CheckFailed(Exception):
    pass


def check_fstest(path):
    try:
        fstest.check(path)
    except fstest.FormatError as e:
        raise CheckFailed(f"fstest: {e}")


def check_index(path):
    """Compare PATH.index with a scan; returns the name of the check done, or None."""
    index_path = path + ".index"
    if not os.path.exists(index_path):
        return None
    scanned = fsIndex()
    with open(path, "rb") as f:
        pos, _, _ = read_index(f, path, scanned, {}, b"\xff" * 8, read_only=1)
    saved = fsIndex.load(index_path)
    if saved["pos"] != pos:
        # Written before later commits (or for another file): FileStorage scans past it or
        # ignores it, so it is not an error of the data file.
        return "index-stale"
    if dict(saved["index"].items()) != dict(scanned.items()):
        raise CheckFailed(f"index: {index_path} differs from the index built by scanning {path}")
    return "index"


def check_iterator(path, blob_dir):
    storage = FileStorage(path, read_only=True)
    helper = None
    if blob_dir:
        with open(os.path.join(blob_dir, ".layout")) as f:
            helper = FilesystemHelper(blob_dir, f.read().strip())
    transactions = records = 0
    try:
        for txn in storage.iterator():
            transactions += 1
            for r in txn:
                records += 1
                if helper and r.data and is_blob_record(r.data):
                    blob = helper.getBlobFilename(r.oid, r.tid)
                    if not os.path.isfile(blob):
                        raise CheckFailed(
                            f"blobs: no blob file {blob} for oid {r.oid.hex()} tid {r.tid.hex()}")
        if transactions and storage.lastTransaction() != txn.tid:
            raise CheckFailed("iterator: the last transaction read is not lastTransaction()")
    finally:
        storage.close()
    return transactions, records


def check_fsrefs(path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fsrefs.main(path)
    if out.getvalue().strip():
        raise CheckFailed("fsrefs:\n" + out.getvalue())


def check_fsdump(path):
    out = io.StringIO()
    fsdump(path, out)
    if not out.getvalue():
        raise CheckFailed("fsdump: no output")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", help="the Data.fs to check")
    parser.add_argument("--blobs", metavar="DIR", help="its blob directory")
    args = parser.parse_args()
    checks = []
    try:
        check_fstest(args.path)
        checks.append("fstest")
        index_check = check_index(args.path)
        if index_check:
            checks.append(index_check)
        transactions, records = check_iterator(args.path, args.blobs)
        checks.append("iterator")
        if args.blobs:
            checks.append("blobs")
        check_fsrefs(args.path)
        checks.append("fsrefs")
        check_fsdump(args.path)
        checks.append("fsdump")
    except CheckFailed as e:
        sys.exit(f"check_fs.py: {args.path}: {e}")
    print(json.dumps({"ok": True, "checks": checks, "transactions": transactions, "records": records}))


if __name__ == "__main__":
    main()
