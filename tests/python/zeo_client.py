"""Stock ZODB/ZEO clients against a ZEO server (stock runzeo, or zeoraid): interop scenarios.

Usage: zeo_client.py SCENARIO ENCODING ADDRESS [ARGS...]

ENCODING is `pickle` or `msgpack`: the encoding the server announces. Every client checks that it
negotiated it. ADDRESS is `host:port`. Each scenario uses the real ZEO.ClientStorage, ZODB.DB and
ZODB objects, exits 0 after printing `ok SCENARIO`, and otherwise exits non-zero with a message
that says what was expected and what was got. Every client is opened with a `wait_timeout`, so a
dead server fails the scenario, and the whole script has a hard timeout (faulthandler dumps every
thread's stack and exits).

Objects are ZODB's own classes (PersistentMapping, BTrees.Length, Blob) so that no pickle refers
to this script's module.
"""

import faulthandler
import hashlib
import json
import os
import random
import sys
import threading
import time
import traceback

import transaction
import ZODB
from BTrees.Length import Length
from persistent.mapping import PersistentMapping
from ZEO.ClientStorage import ClientStorage
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ConflictError
from ZODB.POSException import POSKeyError
from ZODB.POSException import ReadConflictError
from ZODB.POSException import ReadOnlyError
from ZODB.utils import p64
from ZODB.utils import u64

HARD_TIMEOUT = 100  # seconds for the whole script
WAIT_TIMEOUT = 30  # seconds a ClientStorage waits for its server

ENCODING = None  # set from argv


class Failed(Exception):
    pass


def show(value):
    """repr, but long byte strings as their length and digest (blobs are megabytes)."""
    if isinstance(value, bytes) and len(value) > 64:
        return f'<{len(value)} bytes, sha256 {hashlib.sha256(value).hexdigest()[:16]}>'
    text = repr(value)
    return text if len(text) <= 2000 else text[:2000] + f'... ({len(text)} chars)'


def check(cond, what, expected=None, got=None):
    if not cond:
        msg = what
        if expected is not None or got is not None:
            msg += f'\n  expected: {show(expected)}\n  got:      {show(got)}'
        raise Failed(msg)


def equal(what, expected, got):
    check(expected == got, what, expected, got)


def parse_address(text):
    host, _, port = text.rpartition(':')
    return (host, int(port))


def client(address, **kw):
    """A ClientStorage that has negotiated the expected encoding.

    server_sync=True by default: then `transaction.begin()` makes a round trip to the server, so
    a client sees every commit that finished before it began (the server sends invalidations to
    the other clients before it answers the committer's tpc_finish). Without it, invalidations
    arrive asynchronously; `invalidations` checks that mode with polling.
    """
    kw.setdefault('wait_timeout', WAIT_TIMEOUT)
    kw.setdefault('server_sync', True)
    cs = ClientStorage(parse_address(address), **kw)
    letter = {'pickle': b'Z', 'msgpack': b'M'}[ENCODING]
    equal('the negotiated protocol', letter + b'5', cs._server.client.protocol_version)
    return cs


def open_db(address, **kw):
    return ZODB.DB(client(address, **kw))


def connect(db):
    """A connection with its own transaction manager, so one thread can hold several.

    DB.open() does not sync with the server (a commit that finished a moment ago may be
    unknown to it); the explicit begin() does.
    """
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    tm.begin()
    return conn, tm


def commit(tm, note=None, user=None):
    txn = tm.get()
    if note:
        txn.note(note)
    if user:
        txn.user = user
    tm.commit()


def expect_raises(exc_class, what, fn, *args):
    try:
        fn(*args)
    except exc_class as e:
        return e
    except Exception as e:
        raise Failed(f'{what}: expected {exc_class.__name__}, got '
                     f'{type(e).__module__}.{type(e).__name__}: {e}')
    raise Failed(f'{what}: expected {exc_class.__name__}, nothing was raised')


def poll(what, fn, timeout=10):
    """Calls fn until it returns true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failed(f'{what}: not seen within {timeout} s')
        time.sleep(0.02)


# --- scenarios ------------------------------------------------------------------------------


def root(address):
    """A fresh server: DB creates the root; a second client sees what the first committed."""
    db = open_db(address)
    cs = db.storage
    check(not cs.isReadOnly(), 'a default client is read-write')
    check(cs.supportsUndo(), 'the storage supports undo')
    equal("the storage's name as the client sees it", True, isinstance(cs.getName(), str))
    conn, tm = connect(db)
    r = conn.root()
    equal('the root is a PersistentMapping', PersistentMapping, type(r))
    equal('the fresh root is empty', [], list(r.keys()))
    equal('the root oid', p64(0), r._p_oid)
    r['greeting'] = 'hello'
    r['child'] = PersistentMapping(n=1)
    commit(tm, 'first')
    tid = r._p_serial
    equal('lastTransaction() is the tid of the commit', tid, cs.lastTransaction())
    data, serial = cs.load(p64(0))
    equal('load(root) gives the committed serial', tid, serial)
    check(len(data) > 0, 'the root record has data')
    new_oids = {cs.new_oid() for _ in range(5)}
    equal('new_oid gives distinct oids', 5, len(new_oids))
    check(all(u64(o) > u64(r['child']._p_oid) for o in new_oids),
          'new oids are above the ones already used', None, sorted(map(u64, new_oids)))
    db.close()

    db2 = open_db(address)
    conn2, tm2 = connect(db2)
    r2 = conn2.root()
    equal('a second client reads the greeting', 'hello', r2['greeting'])
    equal('a second client reads the child', 1, r2['child']['n'])
    equal('the second client sees the same last tid', tid, db2.storage.lastTransaction())
    db2.close()


def invalidations(address):
    """Commits of one client reach the others without reconnecting."""
    a = open_db(address)
    b = open_db(address)
    c = open_db(address, server_sync=False)  # invalidations arrive asynchronously
    ca, ta = connect(a)
    ca.root()['obj'] = PersistentMapping(v=0)
    commit(ta)
    cb, tb = connect(b)
    cc, tc = connect(c)
    tb.begin()
    tc.begin()
    equal('B reads the initial value', 0, cb.root()['obj']['v'])
    # C has no server_sync: A's invalidation reaches it asynchronously, maybe after this begin.
    poll('C reads the initial value',
         lambda: (tc.begin(), 'obj' in cc.root() and cc.root()['obj']['v'] == 0)[1])
    for value in range(1, 4):
        ca.root()['obj']['v'] = value
        commit(ta)
        tid = ca.root()['obj']._p_serial
        # B syncs with the server at begin(): it must see the commit right away.
        tb.begin()
        equal(f'B sees value {value} right after begin()', value, cb.root()['obj']['v'])
        equal("B's object serial is A's commit", tid, cb.root()['obj']._p_serial)

        def c_sees():
            tc.begin()
            return cc.root()['obj']['v'] == value
        poll(f'C (no server_sync) sees value {value}', c_sees)
    # And the other way round.
    cb.root()['obj']['v'] = 100
    commit(tb)
    ta.begin()
    equal('A sees B\'s commit', 100, ca.root()['obj']['v'])
    equal('every client agrees on the last tid',
          {a.storage.lastTransaction()}, {b.storage.lastTransaction(),
                                          poll('C catches up', lambda: c.storage.lastTransaction()
                                               == a.storage.lastTransaction()) and
                                          c.storage.lastTransaction()})
    for db in (a, b, c):
        db.close()


def conflict_resolved(address):
    """BTrees.Length changed by two clients at once: resolved on the client, the sum wins."""
    a = open_db(address)
    b = open_db(address)
    ca, ta = connect(a)
    ca.root()['len'] = Length(10)
    commit(ta)
    oid = ca.root()['len']._p_oid
    cb, tb = connect(b)
    tb.begin()
    equal('B reads the length', 10, cb.root()['len']())
    ta.begin()
    ca.root()['len'].change(1)
    commit(ta)
    # B still works on the state it read (10): its store conflicts and is resolved.
    cb.root()['len'].change(2)
    commit(tb)
    ta.begin()
    tb.begin()
    equal('A sees the resolved sum', 13, ca.root()['len']())
    equal('B sees the resolved sum', 13, cb.root()['len']())
    equal('the resolved revision is the last transaction',
          b.storage.lastTransaction(), cb.root()['len']._p_serial)
    history = a.storage.history(oid, 10)
    equal('three revisions of the length', 3, len(history))
    for db in (a, b):
        db.close()


def conflict_unresolved(address):
    """A plain persistent object written by two clients: ConflictError on the second commit."""
    a = open_db(address)
    b = open_db(address)
    ca, ta = connect(a)
    ca.root()['pm'] = PersistentMapping(v=0)
    commit(ta)
    oid = ca.root()['pm']._p_oid
    first_tid = ca.root()['pm']._p_serial
    cb, tb = connect(b)
    tb.begin()
    equal('B reads the value', 0, cb.root()['pm']['v'])
    ca.root()['pm']['v'] = 1
    commit(ta)
    second_tid = ca.root()['pm']._p_serial
    cb.root()['pm']['v'] = 2
    err = expect_raises(ConflictError, "B's commit of a stale PersistentMapping", commit, tb)
    check(not isinstance(err, ReadConflictError), 'a write conflict is not a ReadConflictError',
          'ConflictError', type(err).__name__)
    equal('the conflict names the object', oid, err.oid)
    equal("the conflict's serials are (committed, B's old)",
          (second_tid, first_tid), tuple(err.serials))
    tb.abort()
    equal('nothing of B was committed', 1, (ta.begin(), ca.root()['pm']['v'])[1])
    # B retries on fresh state, and succeeds.
    tb.begin()
    equal('B now reads the committed value', 1, cb.root()['pm']['v'])
    cb.root()['pm']['v'] = 2
    commit(tb)
    ta.begin()
    equal('A sees the retried commit', 2, ca.root()['pm']['v'])
    for db in (a, b):
        db.close()


def poskeyerror(address):
    """Loads of oids that do not exist raise POSKeyError, and the connection stays usable."""
    db = open_db(address)
    cs = db.storage
    conn, tm = connect(db)
    conn.root()['x'] = PersistentMapping(v=1)
    commit(tm)
    x_oid = conn.root()['x']._p_oid
    missing = p64(0x7fff0000)
    expect_raises(POSKeyError, 'ClientStorage.load of a missing oid', cs.load, missing)
    expect_raises(POSKeyError, 'Connection.get of a missing oid', conn.get, missing)
    expect_raises(POSKeyError, 'loadSerial of an existing oid at a wrong tid',
                  cs.loadSerial, x_oid, p64(1))
    expect_raises(POSKeyError, 'loadSerial of a missing oid', cs.loadSerial, missing, p64(1))
    # Stock ZEO raises here too (FileStorage.loadBefore does), it does not return None.
    expect_raises(POSKeyError, 'loadBefore of a missing oid', cs.loadBefore, missing,
                  p64(2**63))
    expect_raises(POSKeyError, 'history of a missing oid', cs.history, missing, 1)
    # The storage and the connection still work.
    tm.begin()
    equal('a load after the errors', 1, conn.root()['x']['v'])
    conn.root()['x']['v'] = 2
    commit(tm)
    db.close()


def readcurrent(address):
    """conn.readCurrent(obj) + a concurrent change of obj: ReadConflictError at commit."""
    a = open_db(address)
    b = open_db(address)
    ca, ta = connect(a)
    ca.root()['x'] = PersistentMapping(v=0)
    ca.root()['y'] = PersistentMapping(v=0)
    commit(ta)
    x_oid = ca.root()['x']._p_oid
    # Without a concurrent change, readCurrent commits fine.
    ta.begin()
    x = ca.root()['x']
    equal('A reads x', 0, x['v'])
    ca.readCurrent(x)
    ca.root()['y']['v'] = 1
    commit(ta)
    # With one, the commit fails.
    ta.begin()
    x = ca.root()['x']
    equal('A reads x again', 0, x['v'])
    ca.readCurrent(x)
    ca.root()['y']['v'] = 2
    cb, tb = connect(b)
    cb.root()['x']['v'] = 5
    commit(tb)
    err = expect_raises(ReadConflictError, "A's commit after x changed under readCurrent",
                        commit, ta)
    equal('the read conflict names x', x_oid, err.oid)
    ta.abort()
    ta.begin()
    equal("A's y change was not committed", 1, ca.root()['y']['v'])
    equal("B's x change is there", 5, ca.root()['x']['v'])
    for db in (a, b):
        db.close()


def undo(address):
    """DB.undoLog / DB.undo: the old value is back, for this client and another."""
    a = open_db(address)
    b = open_db(address)
    ca, ta = connect(a)
    ca.root()['u'] = PersistentMapping(v='one')
    commit(ta, 'set one')
    ca.root()['u']['v'] = 'two'
    commit(ta, 'set two', user='alice')
    two_tid = ca.root()['u']._p_serial
    log = a.undoLog(0, 10)
    check(len(log) >= 3, 'undoLog lists the root creation and both commits', '>= 3', len(log))
    top = log[0]
    equal('the newest undoable transaction is first', 'set two', top['description'])
    equal('its user (DB.undoLog gives text)', 'alice', top['user_name'])
    check(abs(top['time'] - time.time()) < 60, 'its time is about now', time.time(), top['time'])
    equal("undoLog's second entry", 'set one', log[1]['description'])
    equal('undoLog honours its bounds', log[1:2], a.undoLog(1, 2))
    cb, tb = connect(b)
    equal('B reads two', 'two', cb.root()['u']['v'])
    ta.begin()
    a.undo(top['id'], ta.get())
    commit(ta, 'undo two')
    ta.begin()
    equal('A reads the undone value', 'one', ca.root()['u']['v'])
    check(ca.root()['u']._p_serial > two_tid, 'the undo is a new transaction')
    tb.begin()
    equal('B sees the undone value', 'one', cb.root()['u']['v'])
    equal('the undo is first in undoLog', 'undo two', a.undoLog(0, 1)[0]['description'])
    for db in (a, b):
        db.close()


def history(address):
    """storage.history: newest first, sizes, tids, user and description of each revision."""
    db = open_db(address)
    cs = db.storage
    conn, tm = connect(db)
    conn.root()['h'] = PersistentMapping(v='')
    commit(tm, 'rev 0', user='bob')
    obj = conn.root()['h']
    tids = [obj._p_serial]
    for i in range(1, 4):
        obj['v'] = 'x' * (100 * i)
        commit(tm, f'rev {i}', user='bob')
        tids.append(obj._p_serial)
    oid = obj._p_oid
    h = cs.history(oid, 10)
    equal('history lists every revision', 4, len(h))
    equal('history is newest first', tids[::-1], [e['tid'] for e in h])
    for i, entry in zip(range(3, -1, -1), h):
        data = cs.loadSerial(oid, entry['tid'])
        equal(f'size of revision {i}', len(data), entry['size'])
        equal(f'description of revision {i}', f'rev {i}'.encode(), entry['description'])
        equal(f'user of revision {i} (bytes from the storage)', b'bob', entry['user_name'])
        from persistent.TimeStamp import TimeStamp
        check(abs(entry['time'] - TimeStamp(entry['tid']).timeTime()) < 1e-3,
              f'time of revision {i} is its tid\'s', TimeStamp(entry['tid']).timeTime(),
              entry['time'])
    equal('history(size=2) gives the newest two', [e['tid'] for e in h[:2]],
          [e['tid'] for e in cs.history(oid, 2)])
    equal('history() gives one by default', [h[0]['tid']], [e['tid'] for e in cs.history(oid)])
    db.close()


def describe_storage(storage):
    """Every transaction and record of an iterator, comparable across storages."""
    out = []
    for txn in storage.iterator():
        records = sorted((r.oid, r.data) for r in txn)
        out.append((txn.tid, txn.status, txn.user, txn.description, dict(txn.extension),
                    records))
    return out


def compare_storages(what, expected, got):
    if expected == got:
        return
    lines = [f'{what}: {len(expected)} vs {len(got)} transactions']
    for i, (e, g) in enumerate(zip(expected, got)):
        if e != g:
            lines.append(f'first difference at transaction {i}:\n  expected {e!r}\n  got      {g!r}')
            break
    raise Failed('\n'.join(lines))


def copy(address, fresh_address, workdir):
    """copyTransactionsFrom: ZEO → Python FileStorage → a fresh ZEO server, all equal."""
    db = open_db(address)
    conn, tm = connect(db)
    conn.root()['c'] = PersistentMapping(v=0)
    commit(tm, 'create c', user='carol')
    for i in range(1, 4):
        conn.root()['c']['v'] = i
        tm.get().setExtendedInfo('step', i)
        commit(tm, f'step {i}')
    conn.root()['other'] = PersistentMapping(v=list(range(50)))
    commit(tm)
    db.undo(db.undoLog(0, 1)[0]['id'], tm.get())  # leaves a backpointer record
    commit(tm, 'undo other')
    source = db.storage
    expected = describe_storage(source)
    equal('the source has every transaction', 7, len(expected))  # root + 6

    fs = FileStorage(os.path.join(workdir, 'copy.fs'), create=True)
    fs.copyTransactionsFrom(source)
    compare_storages('FileStorage copied from ZEO', expected, describe_storage(fs))
    equal("the copy's last tid", source.lastTransaction(), fs.lastTransaction())

    dest = client(fresh_address)
    equal('the fresh server is empty', p64(0), dest.lastTransaction())
    dest.copyTransactionsFrom(fs)
    compare_storages('fresh ZEO server copied from FileStorage', expected, describe_storage(dest))
    equal("the fresh server's last tid", source.lastTransaction(), dest.lastTransaction())
    fs.close()
    # The copied database is usable through a DB.
    db2 = ZODB.DB(dest)
    conn2, tm2 = connect(db2)
    equal('the copied value (after the undo)', 3, conn2.root()['c']['v'])
    check('other' not in conn2.root(), 'the undone root change is not in the copy')
    conn2.root()['c']['v'] = 4
    commit(tm2)
    db2.close()
    db.close()


def blob_bytes(size, seed):
    chunk = hashlib.sha256(seed.encode()).digest()
    return (chunk * (size // len(chunk) + 1))[:size]


def read_blob(blob):
    with blob.open('r') as f:
        return f.read()


def blobs(address, workdir):
    """Blobs written by one client, read by another (each with its own blob cache)."""
    a = open_db(address, blob_dir=os.path.join(workdir, 'a'))
    b = open_db(address, blob_dir=os.path.join(workdir, 'b'))
    ca, ta = connect(a)
    sizes = {'empty': 0, 'small': 100, 'chunky': 3 * 1024 * 1024 + 7}
    for name, size in sizes.items():
        blob = Blob()
        with blob.open('w') as f:
            f.write(blob_bytes(size, name))
        ca.root()[name] = blob
    commit(ta, 'blobs')
    # (A committed blob is a ghost right after the commit: take the tid from the root, written
    # in the same transaction.)
    first_tid = ca.root()._p_serial
    cb, tb = connect(b)
    for name, size in sizes.items():
        data = read_blob(cb.root()[name])
        equal(f'size of blob {name} read by B', size, len(data))
        check(data == blob_bytes(size, name), f'content of blob {name} read by B')
    # B writes a new revision; A reads it, and the old revision is still there.
    with cb.root()['chunky'].open('w') as f:
        f.write(blob_bytes(2 * 1024 * 1024, 'second'))
    commit(tb, 'new chunky')
    ta.begin()
    equal('A reads the new revision', blob_bytes(2 * 1024 * 1024, 'second'),
          read_blob(ca.root()['chunky']))
    oid = ca.root()['chunky']._p_oid
    with open(a.storage.loadBlob(oid, first_tid), 'rb') as f:
        check(f.read() == blob_bytes(sizes['chunky'], 'chunky'),
              'loadBlob of the first revision gives the first content')
    # A client with a fresh blob cache reads it too.
    c = open_db(address, blob_dir=os.path.join(workdir, 'c'))
    cc, tc = connect(c)
    equal('a third client reads the new revision', 2 * 1024 * 1024,
          len(read_blob(cc.root()['chunky'])))
    for db in (a, b, c):
        db.close()


def pack(address, gc='gc'):
    """Pack to now: old revisions gone, current data intact, other clients work.

    `gc`: the server's pack also removes unreachable objects (stock FileStorage); with `nogc`
    (zeoraid, whose pack keeps the current revision of every object: no reference scanning
    yet) the unreachable object must still load, with its last data."""
    a = open_db(address)
    b = open_db(address)
    ca, ta = connect(a)
    ca.root()['p'] = PersistentMapping(v=0)
    ca.root()['garbage'] = PersistentMapping(v='gone soon')
    commit(ta)
    garbage_oid = ca.root()['garbage']._p_oid
    oid = ca.root()['p']._p_oid
    for i in range(1, 5):
        ca.root()['p']['v'] = i
        commit(ta)
    del ca.root()['garbage']
    commit(ta)
    cb, tb = connect(b)
    equal('B reads the value before the pack', 4, cb.root()['p']['v'])
    equal('five revisions before the pack', 5, len(a.storage.history(oid, 10)))
    last = a.storage.lastTransaction()
    time.sleep(0.01)
    a.pack()
    h = a.storage.history(oid, 10)
    equal('one revision after the pack', 1, len(h))
    equal('the kept revision is the current one', ca.root()['p']._p_serial, h[0]['tid'])
    equal('the pack is not a transaction', last, a.storage.lastTransaction())
    ta.begin()
    equal('A still reads the current value', 4, ca.root()['p']['v'])
    # B (connected through the pack) still works: it commits, A sees it.
    tb.begin()
    cb.root()['p']['v'] = 5
    commit(tb)
    ta.begin()
    equal("A sees B's commit after the pack", 5, ca.root()['p']['v'])
    # A new client reads the packed database.
    c = open_db(address)
    cc, tc = connect(c)
    equal('a new client reads the packed data', 5, cc.root()['p']['v'])
    # (A's own cache still holds the garbage object: ask with C's empty cache.)
    if gc == 'gc':
        expect_raises(POSKeyError, 'the unreachable object after the pack', c.storage.load,
                      garbage_oid)
    else:
        data, serial = c.storage.load(garbage_oid)
        equal('the unreachable object keeps its one revision (no GC)', 1,
              len(c.storage.history(garbage_oid, 10)))
        check(b'gone soon' in data, 'the unreachable object keeps its data (no GC)')
    for db in (a, b, c):
        db.close()


def readonly_client(address):
    """ClientStorage(read_only=True) reads and sees commits, and its commits fail."""
    w = open_db(address)
    cw, tw = connect(w)
    cw.root()['r'] = PersistentMapping(v=1)
    commit(tw)
    ro = open_db(address, read_only=True)
    check(ro.storage.isReadOnly(), 'the read-only client says it is read-only')
    cr, tr = connect(ro)
    equal('the read-only client reads', 1, cr.root()['r']['v'])
    cr.root()['r']['v'] = 2
    expect_raises(ReadOnlyError, 'a commit through a read-only client', commit, tr)
    tr.abort()
    cw.root()['r']['v'] = 3
    commit(tw)
    poll('the read-only client sees a later commit',
         lambda: (tr.begin(), cr.root()['r']['v'] == 3)[1])
    expect_raises(ReadOnlyError, 'new_oid through a read-only client', ro.storage.new_oid)
    for db in (w, ro):
        db.close()


def readonly_server_prepare(address):
    db = open_db(address)
    conn, tm = connect(db)
    conn.root()['r'] = PersistentMapping(v='before')
    commit(tm)
    db.close()


def readonly_server_check(address):
    """A read-only server: read-only clients read; a fallback client gets a read-only link."""
    ro = open_db(address, read_only=True)
    cr, tr = connect(ro)
    equal('a read-only client reads', 'before', cr.root()['r']['v'])
    fb = client(address, read_only_fallback=True)
    check(fb.isReadOnly(), 'a read_only_fallback client connects read-only')
    db = ZODB.DB(fb)
    cf, tf = connect(db)
    equal('the fallback client reads', 'before', cf.root()['r']['v'])
    cf.root()['r']['v'] = 'after'
    expect_raises(ReadOnlyError, 'a commit to a read-only server', commit, tf)
    tf.abort()
    for d in (ro, db):
        d.close()


def lock_timeout(address):
    """A client that votes and then stalls loses the commit lock after the server's
    transaction timeout (1 s here): its connection is closed, another client's commit goes
    through, and the stalled transaction is not committed."""
    from ZODB.Connection import TransactionMetaData
    from ZEO.Exceptions import ClientDisconnected
    b = open_db(address)
    cb, tb = connect(b)
    cb.root()['t'] = PersistentMapping(v='initial')
    cb.root()['other'] = PersistentMapping(v=0)
    commit(tb)
    oid = cb.root()['t']._p_oid
    data, serial = b.storage.load(oid)
    stalled = client(address)
    txn = TransactionMetaData()
    stalled.tpc_begin(txn)
    stalled.store(oid, serial, data, '', txn)
    stalled.tpc_vote(txn)  # holds the commit lock from here
    started = time.monotonic()
    cb.root()['other']['v'] = 1
    commit(tb)
    waited = time.monotonic() - started
    check(0.5 < waited < 15, "B's commit waited for the stalled vote's timeout (1 s)",
          'between 0.5 and 15 s', waited)
    expect_raises(ClientDisconnected, 'tpc_finish of the timed-out transaction',
                  stalled.tpc_finish, txn)
    stalled.tpc_abort(txn)
    equal('the stalled store was not committed', serial, b.storage.load(oid)[1])
    # The stalled client reconnects by itself and works again.
    poll('the stalled client reconnects', stalled.is_connected)
    equal('the reconnected client reads the current serial', serial, stalled.load(oid)[1])
    stalled.close()
    b.close()


def cache_oids_path(var):
    return os.path.join(var, 'oids.json')


def cache_phase1(address, var):
    """A client with a persistent cache writes and reads, then closes."""
    db = open_db(address, client='pcache', var=var)
    conn, tm = connect(db)
    r = conn.root()
    for name in ('a', 'b'):
        r[name] = PersistentMapping(v=1)
    commit(tm)
    oids = {name: u64(r[name]._p_oid) for name in ('a', 'b')}
    tm.begin()
    equal('the objects read back', (1, 1), (r['a']['v'], r['b']['v']))
    check(db.storage._cache.load(r['b']._p_oid) is not None, 'b is in the client cache')
    db.close()
    check(any(n.endswith('.zec') for n in os.listdir(var)), 'a .zec cache file was written',
          'pcache-1.zec', os.listdir(var))
    with open(cache_oids_path(var), 'w') as f:
        json.dump(oids, f)


def cache_phase2(address):
    """Another client commits while the cached client is away."""
    db = open_db(address)
    conn, tm = connect(db)
    conn.root()['a']['v'] = 2
    conn.root()['c'] = PersistentMapping(v=3)
    commit(tm)
    db.close()


def cache_phase3(address, var):
    """The cached client reconnects: quick verification invalidates a, keeps b, sees c."""
    with open(cache_oids_path(var)) as f:
        oids = {k: p64(v) for k, v in json.load(f).items()}
    cs = client(address, client='pcache', var=var)
    equal('cache verification on reconnect', 'quick verification',
          cs._server.client.verify_result)
    check(cs._cache.load(oids['a']) is None, 'the changed object a was invalidated in the cache')
    check(cs._cache.load(oids['b']) is not None,
          'the unchanged object b is still cached (the cache was not dropped)')
    db = ZODB.DB(cs)
    conn, tm = connect(db)
    r = conn.root()
    equal('a has the value committed meanwhile', 2, r['a']['v'])
    equal('b has its old value', 1, r['b']['v'])
    equal('c was created meanwhile', 3, r['c']['v'])
    db.close()


def reconnect(address, syncdir):
    """A client stays open while the test restarts the server and another client commits
    (`cache_phase2`): it reconnects by itself and sees the commit, and can commit again.

    Handshake with the test through files in syncdir: this writes `ready` once its objects are
    loaded, and waits for `go` (server restarted and the other commit made)."""
    db = open_db(address)
    conn, tm = connect(db)
    r = conn.root()
    for name in ('a', 'b'):
        r[name] = PersistentMapping(v=1)
    commit(tm)
    tm.begin()
    equal('the objects read back', (1, 1), (r['a']['v'], r['b']['v']))
    with open(os.path.join(syncdir, 'ready'), 'w'):
        pass
    poll('the go file from the test', lambda: os.path.exists(os.path.join(syncdir, 'go')), 60)
    poll('the client reconnects to the restarted server', db.storage.is_connected, 30)

    def sees_commit():
        tm.begin()
        return r['a']['v'] == 2
    poll('the commit made while this client was disconnected', sees_commit)
    equal('b is unchanged', 1, r['b']['v'])
    equal('c was created meanwhile', 3, r['c']['v'])
    r['b']['v'] = 4
    commit(tm)
    other = open_db(address)
    oc, ot = connect(other)
    equal("another client sees the reconnected client's commit", 4, oc.root()['b']['v'])
    other.close()
    db.close()


def many(address, n_clients='20', n_rounds='4'):
    """Many clients at once, each its own ClientStorage: totals must add up."""
    n_clients, n_rounds = int(n_clients), int(n_rounds)
    db = open_db(address)
    conn, tm = connect(db)
    r = conn.root()
    r['length'] = Length(0)
    r['counter'] = PersistentMapping(n=0)
    for i in range(n_clients):
        r[f'own{i}'] = PersistentMapping(v=-1)
    commit(tm)
    errors = []
    retries = [0]
    lock = threading.Lock()
    start = threading.Barrier(n_clients)

    def worker(i):
        jitter = random.Random(i)  # seeded: the same back-off sequence every run
        try:
            wdb = open_db(address)
            wc, wt = connect(wdb)
            start.wait(timeout=60)
            for k in range(n_rounds):
                for attempt in range(50):
                    try:
                        wt.begin()
                        wr = wc.root()
                        wr[f'own{i}']['v'] = k
                        wr['length'].change(1)
                        wr['counter']['n'] += 1
                        wt.commit()
                        break
                    except ConflictError:
                        wt.abort()
                        with lock:
                            retries[0] += 1
                        # Back off as applications do (Zope's retry does too): without it, on
                        # a loaded machine a client can lose every race on the shared counter.
                        time.sleep(jitter.uniform(0, min(0.2, 0.002 * 2 ** attempt)))
                else:
                    raise Failed(f'client {i} round {k}: 50 conflicts in a row')
                wt.begin()
                equal(f'client {i} reads its own object back', k, wc.root()[f'own{i}']['v'])
            wdb.close()
        except BaseException as e:
            with lock:
                errors.append(f'client {i}: {type(e).__name__}: {e}\n{traceback.format_exc()}')

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise Failed(f'{len(errors)} clients failed:\n' + '\n'.join(errors))
    tm.begin()
    total = n_clients * n_rounds
    equal('the conflict-resolved Length counts every commit', total, r['length']())
    equal('the retried counter counts every commit', total, r['counter']['n'])
    equal('every client\'s own object has its last value', [n_rounds - 1] * n_clients,
          [r[f'own{i}']['v'] for i in range(n_clients)])
    print(f'{n_clients} clients x {n_rounds} rounds, {retries[0]} conflict retries')
    db.close()


SCENARIOS = {f.__name__: f for f in [
    root, invalidations, conflict_resolved, conflict_unresolved, poskeyerror, readcurrent,
    undo, history, copy, blobs, pack, readonly_client, readonly_server_prepare,
    readonly_server_check, lock_timeout, cache_phase1, cache_phase2, cache_phase3, reconnect, many]}


def main(argv):
    global ENCODING
    if len(argv) < 4 or argv[1] not in SCENARIOS or argv[2] not in ('pickle', 'msgpack'):
        print(f'usage: {argv[0]} SCENARIO pickle|msgpack HOST:PORT [ARGS...]\n'
              f'scenarios: {" ".join(SCENARIOS)}', file=sys.stderr)
        return 2
    faulthandler.dump_traceback_later(HARD_TIMEOUT, exit=True)
    name, ENCODING, args = argv[1], argv[2], argv[3:]
    started = time.monotonic()
    try:
        SCENARIOS[name](*args)
    except Failed as e:
        print(f'FAILED {name} ({ENCODING}): {e}', file=sys.stderr)
        traceback.print_exc()
        return 1
    print(f'ok {name} ({ENCODING}) in {time.monotonic() - started:.2f} s')
    return 0


if __name__ == '__main__':
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    # ClientStorage threads of a failed scenario may still be retrying: do not wait for them.
    os._exit(code)
