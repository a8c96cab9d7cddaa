"""One user, several devices: what each device is owed (SPEC §1, §2, §3)."""

from helpers import as_map, message


def info(r, user):
    return as_map(r.execute_command("IM.INFO", user))


def devices(r, user):
    return {as_map(d)["device"].decode(): as_map(d) for d in r.execute_command("IM.DEVICES", user)}


def offline(r, user, device, ids=False):
    args = ["IDS"] if ids else []
    return as_map(r.execute_command("IM.OFFLINE.INFO", user, device, *args))


def test_phone_online_laptop_offline(r):
    """The story of issue 2: stored once, owed to both, gone when both acked."""
    r.execute_command("IM.CONNECT", "alice", "phone", "NODE", "node-a")
    r.execute_command("IM.CONNECT", "alice", "laptop", "NODE", "node-b")
    r.execute_command("IM.DISCONNECT", "alice", "laptop")

    stanza = message("m1", body="are you there?")
    seq, mid, pending = r.execute_command("IM.STORE", "alice", stanza)
    assert (mid, pending) == (b"m1", [b"phone"])

    # pending on the phone, offline for the laptop
    devs = devices(r, "alice")
    assert (devs["phone"]["pending"], devs["phone"]["offline"]) == (1, 0)
    assert (devs["laptop"]["pending"], devs["laptop"]["offline"]) == (0, 1)
    assert offline(r, "alice", "phone")["count"] == 0
    assert offline(r, "alice", "laptop", ids=True)["ids"] == [b"m1"]

    # the phone acks: still owed to the laptop
    assert r.execute_command("IM.ACK", "alice", "phone", "m1") == 1
    assert devices(r, "alice")["phone"]["pending"] == 0
    assert info(r, "alice")["messages"] == 1
    assert offline(r, "alice", "laptop")["count"] == 1

    # the laptop comes back, reads the summary, pages, acks
    summary = as_map(r.execute_command("IM.CONNECT", "alice", "laptop", "NODE", "node-b"))
    assert summary == {"count": 1, "bytes": len(stanza), "first": seq, "last": seq}
    cursor, items = r.execute_command("IM.OFFLINE.PAGE", "alice", "laptop")
    assert cursor == 0
    assert [(s, i, st) for s, i, _ts, st in items] == [(seq, b"m1", stanza)]
    assert r.execute_command("IM.ACK", "alice", "laptop", "m1") == 1

    # gone
    i = info(r, "alice")
    assert (i["messages"], i["bytes"], i["pending"], i["first"], i["last"]) == (0, 0, 0, 0, 0)
    assert offline(r, "alice", "laptop")["count"] == 0


def test_first_device_gets_everything(r):
    """No device registered at all: the first device is owed what the mailbox holds."""
    seqs = [r.execute_command("IM.STORE", "alice", message(f"m{i}"))[0] for i in range(3)]
    i = info(r, "alice")
    assert (i["messages"], i["devices"]) == (3, 0)
    assert offline(r, "alice", "phone")["count"] == 3

    summary = as_map(r.execute_command("IM.CONNECT", "alice", "phone"))
    assert (summary["count"], summary["first"], summary["last"]) == (3, seqs[0], seqs[2])
    cursor, items = r.execute_command("IM.OFFLINE.PAGE", "alice", "phone")
    assert cursor == 0 and [it[0] for it in items] == seqs


def test_first_device_by_ack(r):
    """Acking registers the device; in a mailbox with no device it is owed everything."""
    r.execute_command("IM.STORE", "bob", message("b1"))
    r.execute_command("IM.STORE", "bob", message("b2"))
    assert r.execute_command("IM.ACK", "bob", "phone", "b1") == 1
    assert list(devices(r, "bob")) == ["phone"]
    i = info(r, "bob")
    assert i["messages"] == 1
    assert offline(r, "bob", "phone", ids=True)["ids"] == [b"b2"]


def test_later_device_gets_only_later_messages(r):
    r.execute_command("IM.CONNECT", "alice", "phone")
    r.execute_command("IM.DISCONNECT", "alice", "phone")
    early = [r.execute_command("IM.STORE", "alice", message(f"e{i}"))[0] for i in range(3)]

    # the laptop registers after those three: it is owed none of them
    assert as_map(r.execute_command("IM.CONNECT", "alice", "laptop"))["count"] == 0
    assert as_map(r.execute_command("IM.OFFLINE.INFO", "alice", "tablet"))["count"] == 0
    r.execute_command("IM.DISCONNECT", "alice", "laptop")
    late = r.execute_command("IM.STORE", "alice", message("l1"))[0]

    assert offline(r, "alice", "laptop", ids=True)["ids"] == [b"l1"]
    assert offline(r, "alice", "phone")["count"] == 4
    cursor, items = r.execute_command("IM.OFFLINE.PAGE", "alice", "laptop")
    assert [it[0] for it in items] == [late]

    # the phone acks everything up to the last early message: the early ones
    # are owed by no one else and leave; the late one stays for the laptop
    assert r.execute_command("IM.ACK", "alice", "phone", "UPTO", early[-1]) == 3
    i = info(r, "alice")
    assert (i["messages"], i["first"], i["last"]) == (1, late, late)


def test_forget_frees_what_no_one_owes(r):
    for d in ("phone", "laptop"):
        r.execute_command("IM.CONNECT", "alice", d)
        r.execute_command("IM.DISCONNECT", "alice", d)
    r.execute_command("IM.STORE", "alice", message("m1"))
    r.execute_command("IM.STORE", "alice", message("m2"))
    assert r.execute_command("IM.ACK", "alice", "phone", "m1") == 1

    # m1 was acked by the phone and only the laptop still owed it: deleted.
    # m2 is still owed by the phone: kept.
    assert r.execute_command("IM.FORGET", "alice", "laptop") == 1
    assert offline(r, "alice", "phone", ids=True)["ids"] == [b"m2"]
    assert info(r, "alice")["messages"] == 1

    # m2 was acked by nobody: forgetting its last device keeps it for the
    # next device, which (the mailbox having no device) is owed everything
    assert r.execute_command("IM.FORGET", "alice", "phone") == 0
    i = info(r, "alice")
    assert (i["messages"], i["devices"]) == (1, 0)
    assert as_map(r.execute_command("IM.CONNECT", "alice", "watch"))["count"] == 1
    assert r.execute_command("IM.ACK", "alice", "watch", "m2") == 1
    assert info(r, "alice")["messages"] == 0


def test_disconnect_moves_pending_offline(r):
    r.execute_command("IM.CONNECT", "alice", "phone")
    r.execute_command("IM.CONNECT", "alice", "laptop")
    for i in range(4):
        assert sorted(r.execute_command("IM.STORE", "alice", message(f"m{i}"))[2]) == [b"laptop", b"phone"]
    r.execute_command("IM.ACK", "alice", "phone", "m0", "m1")
    assert r.execute_command("IM.DISCONNECT", "alice", "phone") == 2
    devs = devices(r, "alice")
    assert (devs["phone"]["online"], devs["phone"]["pending"], devs["phone"]["offline"]) == (0, 0, 2)
    assert (devs["laptop"]["online"], devs["laptop"]["pending"], devs["laptop"]["offline"]) == (1, 4, 0)
    assert offline(r, "alice", "phone", ids=True)["ids"] == [b"m2", b"m3"]
    i = info(r, "alice")
    assert (i["messages"], i["online"], i["pending"]) == (4, 1, 4)


def test_devices_option_targets_delivered_sessions(r):
    r.execute_command("IM.CONNECT", "alice", "phone")
    r.execute_command("IM.CONNECT", "alice", "laptop")
    seq, _, pending = r.execute_command("IM.STORE", "alice", message("m1"), "DEVICES", "1", "laptop")
    assert pending == [b"laptop"]
    devs = devices(r, "alice")
    assert (devs["phone"]["pending"], devs["phone"]["offline"]) == (0, 1)
    assert (devs["laptop"]["pending"], devs["laptop"]["offline"]) == (1, 0)
    _, _, pending = r.execute_command("IM.STORE", "alice", message("m2"), "DEVICES", "2", "phone", "laptop")
    assert sorted(pending) == [b"laptop", b"phone"]


def test_ack_of_offline_and_pending_alike(r):
    r.execute_command("IM.CONNECT", "alice", "phone")
    r.execute_command("IM.STORE", "alice", message("p1"))      # pending
    r.execute_command("IM.DISCONNECT", "alice", "phone")       # -> offline
    r.execute_command("IM.CONNECT", "alice", "phone")
    r.execute_command("IM.STORE", "alice", message("p2"))      # pending
    assert r.execute_command("IM.ACK", "alice", "phone", "p1", "p2") == 2
    assert info(r, "alice")["messages"] == 0


def test_users_are_independent(r):
    r.execute_command("IM.CONNECT", "alice", "phone")
    r.execute_command("IM.CONNECT", "bob", "phone")
    r.execute_command("IM.DISCONNECT", "bob", "phone")
    r.execute_command("IM.STORE", "alice", message("same"))
    r.execute_command("IM.STORE", "bob", message("same"))
    assert r.execute_command("IM.ACK", "alice", "phone", "same") == 1
    assert info(r, "alice")["messages"] == 0
    assert info(r, "bob")["messages"] == 1
    assert offline(r, "bob", "phone", ids=True)["ids"] == [b"same"]
