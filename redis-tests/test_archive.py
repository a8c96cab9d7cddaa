"""Retention, the archive queue and eviction (SPEC §6), module side:
`IM.ARCHIVE.PULL` with leases, `IM.ARCHIVE.ACK`, `IM.IMPORT`, idle
mailboxes evicted through the queue to a tombstone, `IM.CONNECT` on it.
Nothing leaves Redis before an archiver confirmed it. Every test runs with
a replica attached and the AOF on, and ends with the replica's digests
equal to the primary's."""

import time

from helpers import (as_map, assert_digests_equal, digest, expect_error, message, wait_for,
                     wait_replica_synced)

AGE = {"retention": 300, "archive": "yes", "sweep-interval": 10}


def pair(make_server, args):
    primary = make_server(module_args=args, extra_conf={"appendonly": "yes"})
    replica = make_server(module_args=args, replicaof=primary)
    wait_replica_synced(primary, replica)
    return primary, replica


def info(r, user):
    return as_map(r.execute_command("IM.INFO", user))


def pull(r, *args):
    return [(u, s, i, ts, st, devs) for u, s, i, ts, st, devs in r.execute_command("IM.ARCHIVE.PULL", *args)]


def stats(r):
    return r.info("im")


def test_aged_messages_are_queued_leased_and_acked(make_server):
    primary, replica = pair(make_server, AGE)
    r = primary.client()
    r.execute_command("IM.CONNECT", "alice", "phone", "NODE", "n1")
    r.execute_command("IM.DISCONNECT", "alice", "phone")
    seqs = [r.execute_command("IM.STORE", "alice", message(f"m{i}"))[0] for i in range(3)]
    # Older than retention: out of the mailbox for the device, into the
    # queue, still in Redis.
    wait_for(lambda: info(r, "alice")["queued"] == 3, what="the messages to be queued")
    assert info(r, "alice")["messages"] == 3
    assert as_map(r.execute_command("IM.OFFLINE.INFO", "alice", "phone"))["count"] == 0
    assert r.execute_command("IM.OFFLINE.PAGE", "alice", "phone") == [0, []]
    assert stats(r)["im_archive_queue"] == 3
    # Handed out under a lease (2 s: long enough for a busy machine to
    # pull twice within it): two, then the third; then nothing.
    leased_at = time.monotonic()
    first = pull(r, "COUNT", 2, "LEASE", 2000)
    assert [(u, s, i) for u, s, i, *_ in first] == [(b"alice", seqs[0], b"m0"), (b"alice", seqs[1], b"m1")]
    assert all(devs == [b"phone"] for *_, devs in first)
    assert first[0][4] == message("m0")
    assert [s for _, s, *_ in pull(r, "COUNT", 2, "LEASE", 2000)] == [seqs[2]]
    assert pull(r) == []
    assert stats(r)["im_archive_leased"] == 3
    # Not acked: handed out again when the lease ends, and not before.
    back, first_back = [], []

    def all_back():
        got = [s for _, s, *_ in pull(r, "LEASE", 60000)]
        if got and not first_back:
            first_back.append(time.monotonic())
        back.extend(got)
        return sorted(back) == seqs
    wait_for(all_back, timeout=10, what="the lease to end")
    assert first_back[0] - leased_at >= 2.0 - 0.015, "handed out again within the lease"
    # Acked: gone for good, never handed out again.
    assert r.execute_command("IM.ARCHIVE.ACK", "alice", *seqs[:2]) == 2
    assert r.execute_command("IM.ARCHIVE.ACK", "alice", seqs[0]) == 0
    assert info(r, "alice")["messages"] == 1 and info(r, "alice")["queued"] == 1
    assert r.execute_command("IM.ARCHIVE.ACK", "alice", seqs[2]) == 1
    assert info(r, "alice")["messages"] == 0
    time.sleep(0.1)
    assert pull(r, "LEASE", 1) == []
    assert stats(r)["im_archived"] == 3 and stats(r)["im_archive_queue"] == 0
    assert_digests_equal(primary, replica, ["alice"])


def test_a_message_stored_after_the_rest_were_queued_ages_on_time(make_server):
    """Every message of a mailbox is in the archive queue (the archiver is
    behind), and a new one arrives: retention counts only messages still
    held, so the new one sets the mailbox's deadline, and is queued in its
    turn, not a month later when `mailbox-idle` comes."""
    s = make_server(module_args={**AGE, "device-idle": 0})
    r = s.client()
    r.execute_command("IM.CONNECT", "ivy", "phone", "NODE", "n1")
    r.execute_command("IM.DISCONNECT", "ivy", "phone")
    r.execute_command("IM.STORE", "ivy", message("m1"))
    wait_for(lambda: info(r, "ivy")["queued"] == 1, what="the first message to be queued")
    r.execute_command("IM.STORE", "ivy", message("m2"))
    wait_for(lambda: info(r, "ivy")["queued"] == 2, timeout=5, what="the second message to be queued")
    assert as_map(r.execute_command("IM.OFFLINE.INFO", "ivy", "phone"))["count"] == 0


def test_without_archive_aged_messages_are_deleted_and_counted(make_server):
    primary, replica = pair(make_server, {**AGE, "archive": "no"})
    r = primary.client()
    for i in range(4):
        r.execute_command("IM.STORE", "bob", message(f"m{i}"))
    wait_for(lambda: not r.exists("bob"), what="the messages to be deleted")
    assert stats(r)["im_dropped"] == 4
    assert stats(r)["im_archive_queue"] == 0 and pull(r) == []
    assert_digests_equal(primary, replica, ["bob"])


def test_the_queue_survives_a_reload_and_follows_a_rename(make_server):
    primary, replica = pair(make_server, AGE)
    r = primary.client()
    for i in range(5):
        r.execute_command("IM.STORE", "carol", message(f"m{i}"))
    wait_for(lambda: info(r, "carol")["queued"] == 5, what="the messages to be queued")
    before = digest(r, "carol")
    r.execute_command("DEBUG", "RELOAD")
    assert digest(r, "carol") == before
    r.rename("carol", "carol2")
    got = pull(r, "LEASE", 60000)
    assert sorted(i for _, _, i, *_ in got) == [f"m{i}".encode() for i in range(5)]
    assert {u for u, *_ in got} == {b"carol2"}
    assert r.execute_command("IM.ARCHIVE.ACK", "carol2", *[s for _, s, *_ in got]) == 5
    assert not r.exists("carol2")
    assert_digests_equal(primary, replica, ["carol", "carol2"])


def test_import_puts_a_message_back_once(make_server):
    primary, replica = pair(make_server, {**AGE, "retention": 60_000})
    r = primary.client()
    r.execute_command("IM.CONNECT", "dave", "phone")
    r.execute_command("IM.DISCONNECT", "dave", "phone")
    seq, id = r.execute_command("IM.IMPORT", "dave", 1_000_000, "old1", message("old1"), "SEQ", 5)
    assert (seq, id) == (5, b"old1")
    # Owed as a message stored now, with its own time; a repeat stores
    # nothing.
    assert r.execute_command("IM.IMPORT", "dave", 1_000_000, "old1", message("old1"), "SEQ", 5) == [5, b"old1"]
    cursor, items = r.execute_command("IM.OFFLINE.PAGE", "dave", "phone")
    assert [(s, i, ts) for s, i, ts, _ in items] == [(5, b"old1", 1_000_000)]
    # A seq that is taken is not reused, nor one at or above the counter
    # (it would move the counter on): each takes the counter's seq.
    s2, _ = r.execute_command("IM.IMPORT", "dave", 2_000_000, "old2", message("old2"), "SEQ", 5)
    assert s2 == info(r, "dave")["next_seq"] - 1 and s2 > 5
    counter = info(r, "dave")["next_seq"]
    assert r.execute_command("IM.IMPORT", "dave", 3, "x", message("x"), "SEQ", counter + 1000)[0] == counter
    assert info(r, "dave")["next_seq"] == counter + 1
    raw = primary.raw()
    for bad in (["IM.IMPORT", "dave", "-1", "i", message("i")],
                ["IM.IMPORT", "dave", "1", "", message("i")],
                ["IM.IMPORT", "dave", "1", "i", b"<message>"],
                ["IM.IMPORT", "dave", "1", "i", message("i"), "SEQ"],
                ["IM.IMPORT", "dave", "1", "i", message("i"), "BOGUS", "1"]):
        assert expect_error(raw, *bad).startswith("ERR")
    assert info(r, "dave")["messages"] == 3
    assert_digests_equal(primary, replica, ["dave"])


def test_an_idle_mailbox_is_evicted_through_the_queue_to_a_tombstone(make_server, subscribe):
    args = {"mailbox-idle": 300, "archive": "yes", "sweep-interval": 10, "retention": 0}
    primary, replica = pair(make_server, args)
    r = primary.client()
    events = subscribe(primary, "archive")
    r.execute_command("IM.CONNECT", "erin", "phone", "NODE", "n1")
    r.execute_command("IM.DISCONNECT", "erin", "phone")
    seqs = [r.execute_command("IM.STORE", "erin", message(f"m{i}"))[0] for i in range(50)]
    wait_for(lambda: info(r, "erin")["queued"] == 50, what="the mailbox to be evicted")
    assert stats(r)["im_evicted"] == 1
    # Devices forgotten; the messages stay until an archiver confirms.
    assert info(r, "erin")["devices"] == 0 and info(r, "erin")["messages"] == 50
    got = pull(r, "COUNT", 1000)
    assert [s for _, s, *_ in got] == seqs
    assert r.execute_command("IM.ARCHIVE.ACK", "erin", *seqs) == 50
    # A tombstone: no message, no device, the counter kept.
    assert r.exists("erin")
    i = info(r, "erin")
    assert (i["messages"], i["devices"], i["queued"]) == (0, 0, 0)
    assert i["next_seq"] == seqs[-1] + 1
    # Storing again: seqs above all earlier ones.
    assert r.execute_command("IM.STORE", "erin", message("new"))[0] > seqs[-1]
    # The device comes back: 50 wait in the archive, and a restore request
    # goes to the archiver.
    reply = as_map(r.execute_command("IM.CONNECT", "erin", "phone", "NODE", "n1"))
    assert reply["archived"] == 50 and reply["count"] == 1
    events.wait(lambda got: len(got) == 1, what="a restore request")
    assert {k: v for k, v in events.got[0].items() if not k.startswith("_")} == \
        {"event": "restore", "user": "erin", "archived": 50}
    # Each message imported counts down.
    r.execute_command("IM.IMPORT", "erin", 5, "m0", message("m0"), "SEQ", seqs[0])
    assert as_map(r.execute_command("IM.CONNECT", "erin", "phone"))["archived"] == 49
    assert_digests_equal(primary, replica, ["erin"])


def test_a_device_back_before_the_archiver_gets_what_is_still_queued(make_server):
    args = {"mailbox-idle": 300, "archive": "yes", "sweep-interval": 10, "retention": 0}
    primary, replica = pair(make_server, args)
    r = primary.client()
    r.execute_command("IM.CONNECT", "fay", "phone")
    r.execute_command("IM.DISCONNECT", "fay", "phone")
    for i in range(5):
        r.execute_command("IM.STORE", "fay", message(f"m{i}"))
    wait_for(lambda: info(r, "fay")["queued"] == 5, what="the mailbox to be evicted")
    got = pull(r, "COUNT", 2)
    assert r.execute_command("IM.ARCHIVE.ACK", "fay", *[s for _, s, *_ in got]) == 2
    reply = as_map(r.execute_command("IM.CONNECT", "fay", "laptop"))
    # Three came back at once; two wait in the archive.
    assert (reply["count"], reply["archived"]) == (3, 2)
    assert info(r, "fay")["queued"] == 0
    # A late ack for one that came back removes nothing.
    assert r.execute_command("IM.ARCHIVE.ACK", "fay", got[0][1] + 2) == 0
    _, items = r.execute_command("IM.OFFLINE.PAGE", "fay", "laptop")
    assert [i for _, i, _, _ in items] == [b"m2", b"m3", b"m4"]
    assert_digests_equal(primary, replica, ["fay"])


def test_drop_oldest_goes_through_the_queue_with_archive(make_server):
    args = {"max-messages": 3, "quota-policy": "drop-oldest", "archive": "yes", "retention": 0}
    primary, replica = pair(make_server, args)
    r = primary.client()
    for i in range(5):
        r.execute_command("IM.STORE", "gus", message(f"m{i}"))
    i = info(r, "gus")
    # Three in the mailbox, the two oldest queued (not counted against it).
    assert (i["messages"], i["queued"]) == (5, 2)
    _, items = r.execute_command("IM.OFFLINE.PAGE", "gus", "phone")
    assert [x[1] for x in items] == [b"m2", b"m3", b"m4"]
    assert sorted(x[2] for x in pull(r)) == [b"m0", b"m1"]
    assert_digests_equal(primary, replica, ["gus"])


def test_pull_and_ack_refuse_bad_arguments(make_server):
    primary, replica = pair(make_server, AGE)
    raw = primary.raw()
    for bad in (["IM.ARCHIVE.PULL", "COUNT", 0], ["IM.ARCHIVE.PULL", "COUNT", 1001],
                ["IM.ARCHIVE.PULL", "LEASE", 0], ["IM.ARCHIVE.PULL", "COUNT"],
                ["IM.ARCHIVE.PULL", "BOGUS"], ["IM.ARCHIVE.ACK", "u", "x"]):
        assert expect_error(raw, *bad).startswith("ERR")
    assert expect_error(raw, "IM.ARCHIVE.ACK", "u").lower().startswith("err wrong number")
    err = expect_error(replica.raw(), "IM.ARCHIVE.PULL")
    assert err.startswith("READONLY") or "primary" in err


def test_retention_at_scale_keeps_within_the_budget(make_server):
    """100,000 messages in 1,000 mailboxes age at once: the timer queues
    them all, no run longer than its budget and one visit."""
    args = {"retention": 1500, "archive": "yes", "sweep-interval": 10, "sweep-budget": 1000}
    primary, replica = pair(make_server, args)
    r = primary.client()
    load = r.register_script("""
    for i = 1, tonumber(ARGV[2]) do
      for j = 1, tonumber(ARGV[3]) do
        redis.call('IM.STORE', ARGV[1] .. i, ARGV[4])
      end
    end
    return 1
    """)
    load(args=["user:", 1000, 100, message(None, body="x" * 40)])
    wait_for(lambda: stats(r)["im_archive_queue"] == 100_000, timeout=60,
             what="every message to be queued")
    # The budget plus one visit, the documented slack, on the run's CPU
    # time: a run preempted outside a visit counts wall time it did not
    # spend.
    info = stats(r)
    assert info["im_sweep_longest_cpu_us"] <= 1000 + info["im_sweep_longest_visit_us"] + 100, info
    assert_digests_equal(primary, replica, [f"user:{i}" for i in (1, 500, 1000)])


def test_pull_goes_on_after_a_mailbox_it_emptied_and_stays_in_its_db(make_server):
    """A pull remembers where it stopped; a mailbox emptied by its acks
    since must not make the next pull skip the one after it. A pull hands
    out the selected db's queue only (acks go to that db)."""
    primary, replica = pair(make_server, AGE)
    r = primary.client()
    users = [f"u{i}" for i in range(5)]
    for u in users:
        for j in range(3):
            r.execute_command("IM.STORE", u, message(f"{u}-{j}"))
    other = primary.client(db=3)
    other.execute_command("IM.STORE", "elsewhere", message("e"))
    wait_for(lambda: stats(r)["im_archive_queue"] == 16, what="every message to be queued")
    handed = []
    while True:
        got = pull(r, "COUNT", 3, "LEASE", 60000)
        if not got:
            break
        handed += got
        by_user = {}
        for u, s, *_ in got:
            by_user.setdefault(u, []).append(s)
        for u, seqs in by_user.items():
            r.execute_command("IM.ARCHIVE.ACK", u, *seqs)
    assert sorted({u.decode() for u, *_ in handed}) == users
    assert len(handed) == 15 and stats(r)["im_archive_queue"] == 1
    got = pull(other)
    assert [(u, i) for u, _, i, *_ in got] == [(b"elsewhere", b"e")]
    assert other.execute_command("IM.ARCHIVE.ACK", "elsewhere", got[0][1]) == 1
    assert stats(r)["im_archive_queue"] == 0


def test_the_queue_survives_an_aof_rewrite_of_commands(make_server):
    """An AOF rewrite without the RDB preamble writes each mailbox as
    `IM.LOAD HEAD` then `IM.LOAD MSGS` (Valkey 9's atomic slot migration
    sends mailboxes the same way): the archive state in the header must
    outlive the HEAD, whose queue counts nothing until the messages load.
    Checked with the timer off after the load, so that retention cannot
    queue again what a lost state left in the log."""
    primary = make_server(module_args=AGE, extra_conf={"appendonly": "yes", "aof-use-rdb-preamble": "no"})
    r = primary.client()
    wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0, what="the startup AOF rewrite")
    r.execute_command("IM.CONNECT", "hal", "phone")
    r.execute_command("IM.DISCONNECT", "hal", "phone")
    for i in range(4):
        r.execute_command("IM.STORE", "hal", message(f"m{i}"))
    wait_for(lambda: info(r, "hal")["queued"] == 4, what="the messages to be queued")
    r.config_set("im.sweep-interval", 0)
    before = digest(r, "hal")
    r.bgrewriteaof()
    wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0
             and r.info("persistence")["aof_rewrite_scheduled"] == 0, timeout=30, what="BGREWRITEAOF")
    assert r.info("persistence")["aof_last_bgrewrite_status"] == "ok"
    r.execute_command("DEBUG", "LOADAOF")
    assert info(r, "hal")["queued"] == 4
    assert digest(r, "hal") == before
    got = pull(r, "LEASE", 60000)
    assert [i for _, _, i, *_ in got] == [b"m0", b"m1", b"m2", b"m3"]
    assert r.execute_command("IM.ARCHIVE.ACK", "hal", *[s for _, s, *_ in got]) == 4


def test_memory_usage_counts_the_messages_and_the_archive_queue(make_server):
    """`MEMORY USAGE <user>` is the module's estimate of a mailbox
    (docs/operations.md): its stanzas and a little more. Once its messages
    are queued for the archive, the same messages are still there, and the
    queue's state (which devices owed each message) counts on top."""
    stanzas = [message(f"m{i}", body="x" * 150) for i in range(20)]

    def fill(r):
        r.execute_command("IM.CONNECT", "mem", "phone", "NODE", "n1")
        r.execute_command("IM.DISCONNECT", "mem", "phone")
        for st in stanzas:
            r.execute_command("IM.STORE", "mem", st)

    plain = make_server().client()
    fill(plain)
    offline = plain.memory_usage("mem")
    total = sum(len(st) for st in stanzas)
    assert total < offline < 1.5 * total + 1000, (offline, total)

    primary, replica = pair(make_server, AGE)
    r = primary.client()
    fill(r)
    wait_for(lambda: info(r, "mem")["queued"] == 20, what="the messages to be queued")
    queued = r.memory_usage("mem")
    assert queued > offline + 20 * len(b"phone"), (queued, offline)
    assert_digests_equal(primary, replica, ["mem"])
