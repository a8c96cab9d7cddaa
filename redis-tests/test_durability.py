"""Durable as Redis is (SPEC §8): RDB, AOF rewrite and replay, DEBUG RELOAD,
and a truncated RDB that the server refuses without a crash."""

import time

import pytest

from helpers import (
    Workload, all_keys, as_map, diff_snapshots, digest, message, snapshot, varint, wait_for, zigzag,
)

# The timer is off so that nothing changes between a snapshot and a reload.
QUIET = {"sweep-interval": 0}
USERS = [f"user{i}@example.com" for i in range(30)]


def populate(r, n=1500, seed=7):
    """A varied dataset: random traffic plus a few hand-made corner cases."""
    w = Workload(USERS, seed=seed)
    w.run(r, n)
    assert not w.errors, w.errors[:5]
    # a binary key; an empty mailbox (devices, no messages); a big stanza;
    # a device that acked a message in the middle (a hole in its offline set)
    odd = b"\xff\x00odd\r\nkey"
    r.execute_command("IM.CONNECT", odd, "phone", "NODE", "n:1")
    r.execute_command("IM.STORE", odd, message("bin", body="\u00e9\U0001F600"))
    r.execute_command("IM.CONNECT", "empty@example.com", "phone")
    r.execute_command("IM.CONNECT", "holes@example.com", "laptop")
    r.execute_command("IM.DISCONNECT", "holes@example.com", "laptop")
    r.execute_command("IM.CONNECT", "holes@example.com", "phone", "NODE", "node-9")
    for i in range(20):
        r.execute_command("IM.STORE", "holes@example.com", message(f"h{i}", body="z" * (i * 50)))
    r.execute_command("IM.ACK", "holes@example.com", "laptop", "h3", "h4", "h10", "h19")
    r.execute_command("IM.ACK", "holes@example.com", "phone", "h0", "h7")
    r.execute_command("IM.STORE", "holes@example.com", message("huge", body="q" * 60000))
    return w


def assert_same(before, after):
    assert after == before, "state changed:\n" + diff_snapshots(before, after)


def assert_still_works(r):
    """After a reload: new messages get seqs above every seq held before."""
    for k in all_keys(r):
        info = as_map(r.execute_command("IM.INFO", k))
        seq = r.execute_command("IM.STORE", k, message("after-reload"))[0]
        assert seq > info["last"] and seq >= info["next_seq"]


def test_digest_follows_content(make_server):
    r = make_server(module_args=QUIET).client()
    r.execute_command("IM.CONNECT", "alice", "phone")
    d0 = digest(r, "alice")
    assert d0 != "0" * 40, "the mailbox type needs a digest"
    r.execute_command("IM.STORE", "alice", message("m1"))
    d1 = digest(r, "alice")
    assert d1 != d0
    r.execute_command("IM.ACK", "alice", "phone", "m1")
    assert digest(r, "alice") != d1


def test_debug_reload(make_server):
    s = make_server(module_args=QUIET)
    r = s.client()
    populate(r)
    before = snapshot(r)
    assert len(all_keys(r)) >= 25
    assert r.execute_command("DEBUG", "RELOAD")
    assert_same(before, snapshot(r))
    assert_still_works(r)


def test_save_and_restart(make_server):
    s = make_server(module_args=QUIET)
    r = s.client()
    populate(r)
    before = snapshot(r)
    assert r.save()
    s.restart(kill=True)
    r = s.client()
    assert_same(before, snapshot(r))
    assert_still_works(r)


def aof_idle(r):
    p = r.info("persistence")
    return (p["aof_rewrite_in_progress"] == 0 and p["aof_rewrite_scheduled"] == 0
            and p.get("aof_rewrites_consecutive_failures", 0) == 0)


@pytest.mark.parametrize("preamble", ["no", "yes"], ids=["aof-commands", "aof-rdb-preamble"])
def test_aof_rewrite_and_restart(make_server, preamble):
    s = make_server(module_args=QUIET, extra_conf={
        "appendonly": "yes", "appendfsync": "always", "aof-use-rdb-preamble": preamble})
    r = s.client()
    wait_for(lambda: aof_idle(r), what="the startup AOF rewrite")
    w = populate(r)
    r.bgrewriteaof()
    wait_for(lambda: aof_idle(r) and r.info("persistence")["aof_last_bgrewrite_status"] == "ok",
             timeout=60, what="BGREWRITEAOF")
    # more traffic after the rewrite: replayed from the incremental AOF
    w.run(r, 800)
    assert not w.errors, w.errors[:5]
    before = snapshot(r)

    base = [p for p in (s.dir / "appendonlydir").iterdir() if ".base." in p.name]
    assert base, "no AOF base file"
    if preamble == "no":
        assert all(p.name.endswith(".aof") for p in base)
        assert not base[0].read_bytes().startswith(b"REDIS"), "the base should be commands"

    s.restart()
    r = s.client()
    assert_same(before, snapshot(r))
    assert_still_works(r)


def test_aof_replay_without_rewrite(make_server):
    s = make_server(module_args=QUIET, extra_conf={"appendonly": "yes", "appendfsync": "always"})
    r = s.client()
    wait_for(lambda: aof_idle(r), what="the startup AOF rewrite")
    populate(r, n=1000, seed=11)
    before = snapshot(r)
    s.restart()
    assert_same(before, snapshot(s.client()))


# A truncated RDB: refused with an error about the file, not a crash.
LOAD_ERRORS = ["short read", "unexpected eof", "internal error in rdb", "bad file format",
               "corrupt", "not able to load", "fatal error loading"]


def saved_and_stopped(make_server, n, seed):
    """A server with a populated dataset saved to its RDB, then killed: the
    server, the RDB's path and its bytes."""
    s = make_server(module_args=QUIET)
    populate(s.client(), n=n, seed=seed)
    assert s.client().save()
    s.stop(kill=True)
    dump = s.dir / "dump.rdb"
    return s, dump, dump.read_bytes()


def refused_load(s, what):
    """Starts `s` on the RDB in its directory, which it must refuse: it
    exits with an error, not a signal (or stays in the server's RDB checker
    after logging the error: see Server.wait_load_refused), and never
    crashes. Answers the log of that start."""
    start = s.log_size()
    s.spawn()
    rc = s.wait_load_refused(start)
    log = s.log(start)
    where = f"{what}, exit {rc}, log:\n{log[-2500:]}"
    assert "panicked" not in log and "crashed by signal" not in log and "Guru Meditation" not in log, where
    assert rc is not None, "the file was accepted: " + where
    assert rc == s.CHECKER_LOOP or rc > 0, where
    return log, where


def test_truncated_rdb_is_refused(make_server):
    s, dump, whole = saved_and_stopped(make_server, n=2000, seed=3)
    assert len(whole) > 50000
    # cut points spread over the file (mostly module data) and near its end
    cuts = sorted({int(len(whole) * f) for f in (0.2, 0.35, 0.5, 0.63, 0.77, 0.9, 0.97)}
                  | {len(whole) - 30, len(whole) - 12, len(whole) - 9})
    for cut in cuts:
        dump.write_bytes(whole[:cut])
        log, where = refused_load(s, f"cut at {cut}/{len(whole)}")
        assert any(e in log.lower() for e in LOAD_ERRORS), where
    # and the whole file still loads
    dump.write_bytes(whole)
    s.start()
    assert len(all_keys(s.client())) >= 25


def test_corrupted_rdb_is_refused(make_server):
    """Bytes flipped inside the mailboxes' data reach the module's decoder
    before the file's checksum is checked: still an error, never a crash."""
    s, dump, whole = saved_and_stopped(make_server, n=1500, seed=5)
    for i, frac in enumerate((0.05, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9)):
        at = int(len(whole) * frac)
        bad = bytearray(whole)
        for j in range(at, min(at + 8, len(whole) - 9)):
            bad[j] ^= 0xFF if i % 2 else 0x5A
        dump.write_bytes(bytes(bad))
        refused_load(s, f"bytes flipped at {at}/{len(whole)}")


# Effects as release 1 wrote them into the AOF: every stored stanza inside
# the blob (version 1). The codec: LEB128 varints, zigzag for signed values,
# byte strings prefixed by their length.
def _bytes(b):
    return varint(len(b)) + b


def _resp(*args):
    args = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def test_aof_with_effects_of_version_1_replays(make_server):
    s = make_server(module_args=QUIET, extra_conf={"appendonly": "yes"}, start=False)
    now = int(time.time() * 1000)
    seq = now * 1000
    xml = message("m1", body="kept by an older release")
    head = bytes([1]) + zigzag(now)
    create = head + b"\x01" + varint(seq) + b"\x02" + _bytes(b"phone")
    store = (head + b"\x06" + varint(seq) + zigzag(now) + b"\x00"
             + b"\x00" + _bytes(b"m1") + _bytes(xml) + varint(0))
    s.dir.mkdir(parents=True, exist_ok=True)
    (s.dir / "appendonly.aof").write_bytes(
        _resp("SELECT", 0) + _resp("IM.APPLY", "alice", create) + _resp("IM.APPLY", "alice", store))
    s.start()
    r = s.client()
    info = as_map(r.execute_command("IM.OFFLINE.INFO", "alice", "phone"))
    assert (info["count"], info["first"], info["last"]) == (1, seq, seq), info
    page = r.execute_command("IM.OFFLINE.PAGE", "alice", "phone")
    assert b"kept by an older release" in repr(page).encode(), page
    # the id still finds it: a repeated store answers the stored seq
    assert r.execute_command("IM.STORE", "alice", message("m1"))[0] == seq
