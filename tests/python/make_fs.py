"""Write a small but varied FileStorage with the real ZODB, for zeoraid's interop tests.

usage: make_fs.py OUT_DIR

Creates OUT_DIR/Data.fs (plus Data.fs.index, .lock, .tmp as FileStorage leaves them) and the blob
directory OUT_DIR/blobs (bushy layout), then prints a JSON summary on stdout. OUT_DIR must not
exist yet or be empty.

What the file holds, in commit order (every step is one transaction unless it says otherwise):

  * ZODB's own "initial database creation" of the root PersistentMapping;
  * containers: root["items"] (PersistentMapping), root["tree"] (OOBTree), root["count"]
    (BTrees.Length), and three interop_objects.Item objects a, b, c;
  * many revisions of a, b, c, the tree and the counter, with users, descriptions (one of them
    non-ASCII) and extension metadata of every simple pickle type (str, bytes, int, float, bool,
    None, list, tuple, nested dict), and one transaction with no metadata at all;
  * two blobs, x and y, each with several revisions before and after the pack;
  * a modification undone with db.undo (the undo writes back-pointers), before the pack and
    after it (there with a blob revision: the undo copies the blob file);
  * an object creation undone with db.undo (the object's current record is then a back-pointer
    of 0: "creation undone"), once before the pack (the pack's GC then drops it) and once after;
  * a pack to a time between two transactions in the middle (db.pack(t)), with two more commits
    between that time and the pack call; transactions before the pack time that keep records are
    rewritten with status "p";
  * after the pack: more revisions (a, c, the tree), an object that becomes unreachable and is then deleted with
    the storage's deleteObject (as zc.zodbdgc does), another undo.

Everything but the transaction ids and the times derived from them is the same on every run:
oids are allocated in order, and the states, metadata and blob contents are fixed.
"""

import base64
import json
import os
import sys
import time

import transaction
from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob
from ZODB.Connection import TransactionMetaData
from ZODB.DB import DB
from ZODB.FileStorage import FileStorage
from ZODB.TimeStamp import TimeStamp
from ZODB.utils import u64

from interop_objects import Item


def hex8(b):
    return b.hex()


class Maker:
    def __init__(self, out_dir):
        self.data_fs = os.path.join(out_dir, "Data.fs")
        self.blob_dir = os.path.join(out_dir, "blobs")
        self.storage = FileStorage(self.data_fs, blob_dir=self.blob_dir, pack_keep_old=False)
        self.db = DB(self.storage)
        self.tm = transaction.TransactionManager(explicit=True)
        self.conn = self.db.open(self.tm)
        self.root = self.conn.root()
        self.steps = [{"label": "initial database creation", "tid": hex8(self.db.lastTransaction())}]

    def commit(self, label, user="", description="", **extension):
        """Commit the changes made since the last commit (the transaction was begun by then)."""
        txn = self.tm.get()
        txn.user = user
        txn.description = description
        for key, value in extension.items():
            txn.setExtendedInfo(key, value)
        self.tm.commit()
        tid = self.db.lastTransaction()
        self.steps.append({"label": label, "tid": hex8(tid)})
        self.tm.begin()
        return tid

    def undo(self, tid, label, user, description, **extension):
        """Undo the transaction `tid` through the DB's undo log, as an application would."""
        matching = [e for e in self.db.undoLog(0, 50) if e["id"] == self._undo_id(tid)]
        if len(matching) != 1:
            raise RuntimeError(f"transaction {hex8(tid)} is not in the undo log")
        self.db.undo(matching[0]["id"], self.tm.get())
        return self.commit(label, user, description, **extension)

    @staticmethod
    def _undo_id(tid):
        """FileStorage's undo id of a transaction: its tid in base64."""
        return base64.encodebytes(tid).rstrip()

    def delete_object(self, oid, label, user, description, **extension):
        """Delete an (unreachable) object with the storage's own deleteObject, as zc.zodbdgc does.

        This is a transaction of the storage alone, not of a Connection, so the DB is told of
        it afterwards the way a storage would tell it of a commit made elsewhere.
        """
        meta = TransactionMetaData(user, description, extension)
        serial = self.storage.getTid(oid)
        self.storage.tpc_begin(meta)
        self.storage.deleteObject(oid, serial, meta)
        self.storage.tpc_vote(meta)
        tid = self.storage.tpc_finish(meta)
        self.db._mvcc_storage.invalidate(tid, {oid})
        self.steps.append({"label": label, "tid": hex8(tid)})
        return tid

    @staticmethod
    def write_blob(blob, content):
        with blob.open("w") as f:
            f.write(content)

    def run(self):
        root = self.root
        self.tm.begin()
        objects = {"root": root}

        # -- containers and the first objects
        root["items"] = items = PersistentMapping()
        root["tree"] = tree = OOBTree()
        root["count"] = count = Length(0)
        for name in ("a", "b", "c"):
            items[name] = Item(name, 0)
        self.commit("create containers", "alice", "create the containers", app="make_fs", step=1)
        objects.update(items=items, tree=tree, count=count)
        objects.update({name: items[name] for name in ("a", "b", "c")})

        # -- revisions with every kind of metadata
        extensions = [
            {"note": "plain ascii"},
            {"raw": b"\x00\x01\xfe\xff", "n": 2**40},
            {"ratio": 0.5, "flag": True, "nothing": None},
            {"list": [1, "two", b"three"], "tuple": (1, 2)},
            {"nested": {"k": "v", "n": [1, {"deep": b"\xff"}]}},
            {"unicode": "gr\u00fc\u00dfe \u2713"},
        ]
        for i, ext in enumerate(extensions, start=1):
            objects["a"].value = i
            if i % 2 == 0:
                objects["b"].value = f"b revision {i}"
            if i % 3 == 0:
                objects["c"].value = bytes(range(i * 10))
            tree[f"key{i:03d}"] = i * i
            count.change(1)
            self.commit(f"revision {i}", "alice" if i % 2 else "bob", f"revision {i}", **ext)

        objects["a"].value = "a after an anonymous commit"
        self.commit("anonymous", "", "")  # no user, no description, no extension

        objects["c"].value = "\u00e4\u00f6\u00fc"
        self.commit(
            "non-ascii",
            "j\u00fcrgen",
            "Gr\u00f6\u00dfe \u00e4ndern \u2014 \u00fcn\u00efc\u00f6d\u00e9 \u2713",
            sprache="deutsch",
        )

        # -- blobs
        root["blobs"] = blobs = PersistentMapping()
        blobs["x"] = Blob(b"blob x, revision 1\n")
        blobs["y"] = Blob(b"blob y, revision 1\n" * 4096)  # 76 KiB
        self.commit("create blobs", "alice", "create blobs x and y", blobs=2)
        objects.update(blobs=blobs, x=blobs["x"], y=blobs["y"])
        self.write_blob(blobs["x"], b"blob x, revision 2\n")
        self.commit("blob x revision 2", "alice", "rewrite blob x")

        # -- undo of a modification
        objects["a"].value = "oops"
        oops = self.commit("mistake", "bob", "a change that will be undone")
        self.undo(oops, "undo mistake", "alice", "undo the mistake", reason="mistake")

        # -- undo of an object creation (before the pack: the pack's GC drops the object)
        root["doomed"] = doomed = Item("doomed", "created to be undone")
        created = self.commit("create doomed", "bob", "create an object that will be undone")
        objects["doomed"] = doomed
        self.undo(created, "undo doomed", "alice", "undo an object creation")

        objects["a"].value = "last revision before the pack time"
        tree["key999"] = 999
        self.commit("before pack time", "alice", "last transaction before the pack time")
        before_pack = self.db.lastTransaction()

        # -- a gap, two commits after the pack time, then the pack itself
        time.sleep(0.05)
        objects["b"].value = "first revision after the pack time"
        self.write_blob(blobs["x"], b"blob x, revision 3\n")
        after_pack = self.commit("after pack time 1", "alice", "first transaction after the pack time")
        count.change(5)
        self.commit("after pack time 2", "bob", "second transaction after the pack time")

        pack_time = (TimeStamp(before_pack).timeTime() + TimeStamp(after_pack).timeTime()) / 2
        self.db.pack(pack_time)
        # The pack may have moved the file under the connection: start a fresh transaction.
        self.tm.abort()
        self.tm.begin()

        # -- after the pack
        objects["a"].value = "first revision after the pack"
        del tree["key001"]
        self.commit("after pack 1", "alice", "first commit after the pack", packed=True)
        # The pack dropped most of the revisions above; write every kind of metadata again.
        for i, ext in enumerate(extensions, start=2):
            objects["a"].value = f"a after the pack, revision {i}"
            if i % 2:
                objects["c"].value = [i, f"c{i}", b"\x00" * i]
            tree[f"key1{i:02d}"] = str(i)
            self.commit(f"after pack {i}", "bob", f"commit {i} after the pack", **ext)

        objects["items"]["doomed2"] = doomed2 = Item("doomed2", "created to be undone too")
        created = self.commit("create doomed2", "bob", "create another object that will be undone")
        objects["doomed2"] = doomed2
        self.undo(created, "undo doomed2", "alice", "undo an object creation after the pack")

        root["orphan"] = orphan = Item("orphan", "will become garbage")
        self.commit("create orphan", "alice", "create an object that becomes garbage")
        objects["orphan"] = orphan
        orphan_oid = orphan._p_oid
        del root["orphan"]
        self.commit("drop orphan", "alice", "make the object unreachable")
        self.delete_object(orphan_oid, "delete orphan", "gc", "delete unreachable object", tool="make_fs")

        self.write_blob(blobs["y"], b"blob y, revision 2\n" * 1024)
        objects["c"].value = "c after the pack"
        self.commit("blob y revision 2", "bob", "rewrite blob y, change c")

        objects["b"].value = "oops again"
        self.write_blob(blobs["x"], b"blob x, a revision that will be undone\n")
        oops = self.commit("mistake 2", "bob", "another change that will be undone, blob included")
        self.undo(oops, "undo mistake 2", "alice", "undo the second mistake")

        self.write_blob(blobs["x"], b"blob x, revision 4\n")
        count.change(1)
        tree["key000"] = 0
        self.commit("final", "alice", "the last transaction", final=True)

        summary = {
            "data_fs": self.data_fs,
            "blob_dir": self.blob_dir,
            "objects": {name: hex8(obj._p_oid) for name, obj in sorted(objects.items())},
            "commits": self.steps,
            "pack_time": pack_time,
            "last_transaction_before_pack_time": hex8(before_pack),
            "first_transaction_after_pack_time": hex8(after_pack),
            "last_transaction": hex8(self.db.lastTransaction()),
        }
        self.conn.close()
        self.db.close()
        return summary


def count_statuses(data_fs):
    storage = FileStorage(data_fs, read_only=True)
    try:
        statuses = {}
        oids = set()
        for txn in storage.iterator():
            statuses[txn.status] = statuses.get(txn.status, 0) + 1
            oids.update(u64(r.oid) for r in txn)
        return statuses, len(oids)
    finally:
        storage.close()


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    out_dir = argv[1]
    os.makedirs(out_dir, exist_ok=True)
    if os.listdir(out_dir):
        sys.exit(f"make_fs.py: {out_dir} is not empty")
    summary = Maker(out_dir).run()
    statuses, oid_count = count_statuses(summary["data_fs"])
    summary["transactions_by_status"] = statuses
    summary["transactions"] = sum(statuses.values())
    summary["oids_in_file"] = oid_count
    json.dump(summary, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv)
