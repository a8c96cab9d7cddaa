"""Every command's reply, exactly as SPEC.md gives it, in RESP2 and RESP3.

Maps are RESP3 maps; in RESP2 they are flat arrays of field, value. Each
test checks the raw shape once (`assert_map_shape`) and the values through
`as_map`, which reads both."""

import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import pytest
import redis

from helpers import (
    DEVICE_FIELDS, INFO_FIELDS, OFFLINE_INFO_FIELDS, as_map, assert_map_shape, digest,
    message, now_ms, text,
)

ZERO_OFFLINE = {"count": 0, "bytes": 0, "first": 0, "last": 0}
ZERO_INFO = {f: 0 for f in INFO_FIELDS}


def store(c, user, stanza, *opts):
    return c.execute_command("IM.STORE", user, stanza, *opts)


def offline_device(c, user, device):
    """Register a device and leave it offline."""
    c.execute_command("IM.CONNECT", user, device)
    c.execute_command("IM.DISCONNECT", user, device)


def assert_recent(ms, before, slack=2000):
    assert isinstance(ms, int)
    assert before - slack <= ms <= now_ms() + slack, f"{ms} is not a time near now ({before})"


def test_module_is_listed(client):
    modules = [as_map(m) for m in client.execute_command("MODULE", "LIST")]
    assert b"im" in [m["name"] for m in modules]


# ------------------------------------------------------------ IM.CONNECT

def test_connect(client, protocol):
    reply = client.execute_command("IM.CONNECT", "alice", "phone")
    assert_map_shape(reply, protocol, OFFLINE_INFO_FIELDS)
    assert as_map(reply) == ZERO_OFFLINE

    m1 = message("m1")
    seq = store(client, "alice", m1)[0]
    # The same device connects again (a replaced session): what was pending
    # on the old session becomes offline, and the reply says so.
    reply = client.execute_command("IM.CONNECT", "alice", "phone", "NODE", "node-2")
    assert_map_shape(reply, protocol, OFFLINE_INFO_FIELDS)
    assert as_map(reply) == {"count": 1, "bytes": len(m1), "first": seq, "last": seq}

    dev = as_map(client.execute_command("IM.DEVICES", "alice")[0])
    assert (dev["node"], dev["online"], dev["pending"], dev["offline"]) == (b"node-2", 1, 0, 1)


def test_connect_reply_is_offline_info(client):
    offline_device(client, "alice", "laptop")
    for i in range(3):
        store(client, "alice", message(f"m{i}"))
    info = client.execute_command("IM.OFFLINE.INFO", "alice", "laptop")
    assert as_map(client.execute_command("IM.CONNECT", "alice", "laptop")) == as_map(info)
    assert as_map(info)["count"] == 3


# ------------------------------------------------------------ IM.DISCONNECT

def test_disconnect(client):
    assert client.execute_command("IM.DISCONNECT", "nobody", "phone") == 0
    client.execute_command("IM.CONNECT", "alice", "phone")
    for i in range(3):
        store(client, "alice", message(f"m{i}"))
    assert client.execute_command("IM.DISCONNECT", "alice", "phone") == 3
    dev = as_map(client.execute_command("IM.DEVICES", "alice")[0])
    assert (dev["online"], dev["pending"], dev["offline"]) == (0, 0, 3)
    assert client.execute_command("IM.DISCONNECT", "alice", "phone") == 0
    assert client.execute_command("IM.DISCONNECT", "alice", "watch") == 0


# ------------------------------------------------------------ IM.DEVICES

def test_devices(client, protocol):
    assert client.execute_command("IM.DEVICES", "nobody") == []
    assert client.exists("nobody") == 0

    before = now_ms()
    client.execute_command("IM.CONNECT", "alice", "phone", "NODE", "xmpp-1.example:5222")
    offline_device(client, "alice", "laptop")
    store(client, "alice", message("m1"))

    reply = client.execute_command("IM.DEVICES", "alice")
    assert isinstance(reply, list) and len(reply) == 2
    for dev in reply:
        assert_map_shape(dev, protocol, DEVICE_FIELDS)
    phone, laptop = (as_map(d) for d in reply)  # registration order
    assert_recent(phone["last_seen"], before)
    assert_recent(laptop["last_seen"], before)
    assert {k: v for k, v in phone.items() if k != "last_seen"} == {
        "device": b"phone", "online": 1, "node": b"xmpp-1.example:5222", "pending": 1, "offline": 0}
    assert {k: v for k, v in laptop.items() if k != "last_seen"} == {
        "device": b"laptop", "online": 0, "node": b"default", "pending": 0, "offline": 1}


def test_devices_registration_order(client):
    names = ["zeta", "alpha", "mid", "beta"]
    for n in names:
        client.execute_command("IM.CONNECT", "alice", n)
    assert [as_map(d)["device"] for d in client.execute_command("IM.DEVICES", "alice")] == \
        [n.encode() for n in names]


# ------------------------------------------------------------ IM.FORGET

def test_forget(client):
    client.execute_command("IM.CONNECT", "alice", "phone")
    offline_device(client, "alice", "laptop")
    store(client, "alice", message("m1"))
    assert client.execute_command("IM.ACK", "alice", "phone", "m1") == 1
    assert as_map(client.execute_command("IM.INFO", "alice"))["messages"] == 1  # the laptop owes it
    assert client.execute_command("IM.FORGET", "alice", "laptop") == 1
    assert as_map(client.execute_command("IM.INFO", "alice"))["messages"] == 0
    assert [as_map(d)["device"] for d in client.execute_command("IM.DEVICES", "alice")] == [b"phone"]
    assert client.execute_command("IM.FORGET", "alice", "laptop") == 0
    assert client.execute_command("IM.FORGET", "nobody", "laptop") == 0


# ------------------------------------------------------------ IM.STORE

def test_store(client):
    client.execute_command("IM.CONNECT", "alice", "phone")
    client.execute_command("IM.CONNECT", "alice", "tablet")
    offline_device(client, "alice", "laptop")

    r1 = store(client, "alice", message("m1"))
    assert isinstance(r1, list) and len(r1) == 3
    seq1, id1, pending = r1
    assert isinstance(seq1, int) and seq1 > 0
    assert id1 == b"m1"
    assert sorted(pending) == [b"phone", b"tablet"]

    # ID option wins over the id attribute
    seq2, id2, _ = store(client, "alice", message("attr"), "ID", "given")
    assert id2 == b"given"
    # no id at all: one is generated, unique
    seq3, id3, _ = store(client, "alice", message(None))
    seq4, id4, _ = store(client, "alice", message(None))
    assert isinstance(id3, bytes) and id3 and id4 and id3 != id4
    assert id3 not in (b"m1", b"given")
    # DEVICES: pending only where the server delivered it; offline elsewhere
    seq5, id5, pending5 = store(client, "alice", message("m5"), "DEVICES", "1", "phone")
    assert pending5 == [b"phone"]
    tablet = as_map(client.execute_command("IM.OFFLINE.INFO", "alice", "tablet", "IDS"))
    assert tablet["count"] == 1 and tablet["ids"] == [b"m5"]
    seqs = [seq1, seq2, seq3, seq4, seq5]
    assert seqs == sorted(set(seqs)), "seq must be strictly increasing"

    # a duplicate id stores nothing and answers the existing message
    before = as_map(client.execute_command("IM.INFO", "alice"))
    dup = store(client, "alice", message("m1", body="retry"))
    assert dup[:2] == [seq1, b"m1"]
    dup = store(client, "alice", message("other"), "ID", "given")
    assert dup[:2] == [seq2, b"given"]
    assert as_map(client.execute_command("IM.INFO", "alice")) == before


def test_store_nil_when_policy_keeps_nothing(client):
    offline_device(client, "alice", "laptop")
    assert store(client, "alice", message("g1", type="groupchat")) is None
    assert as_map(client.execute_command("IM.INFO", "alice"))["messages"] == 0


def test_store_without_devices_keeps_message(client):
    seq, mid, pending = store(client, "carol", message("c1"))
    assert (mid, pending) == (b"c1", [])
    info = as_map(client.execute_command("IM.INFO", "carol"))
    assert (info["messages"], info["devices"], info["first"], info["last"]) == (1, 0, seq, seq)


def test_stanza_bytes_kept_exactly(client):
    offline_device(client, "alice", "laptop")
    stanza = ('<message  to="alice@example.com"\n type="chat" id=\'u1\'>'
              '<body>h\u00e9llo &amp; \U0001F600 &lt;b&gt;</body>\n'
              '<thread>t1</thread></message>').encode()
    store(client, "alice", stanza)
    _, items = client.execute_command("IM.OFFLINE.PAGE", "alice", "laptop")
    assert items[0][3] == stanza


def test_binary_safe_user_key(client):
    user = b"\xff\x00user@example.com"
    client.execute_command("IM.CONNECT", user, "phone")
    seq, _, pending = store(client, user, message("b1"))
    assert pending == [b"phone"]
    assert as_map(client.execute_command("IM.INFO", user))["last"] == seq


# ------------------------------------------------------------ IM.ACK

def test_ack(client):
    offline_device(client, "alice", "phone")
    seqs = [store(client, "alice", message(f"m{i}"))[0] for i in range(1, 6)]
    assert client.execute_command("IM.ACK", "alice", "phone", "m1", "m2", "nope") == 2
    assert client.execute_command("IM.ACK", "alice", "phone", "m1") == 0
    assert client.execute_command("IM.ACK", "alice", "phone", "UPTO", seqs[3]) == 2  # m3, m4
    assert client.execute_command("IM.ACK", "alice", "phone", "UPTO", seqs[3]) == 0
    info = as_map(client.execute_command("IM.INFO", "alice"))
    assert (info["messages"], info["first"], info["last"]) == (1, seqs[4], seqs[4])
    assert client.execute_command("IM.ACK", "alice", "phone", "UPTO", seqs[4] + 10**6) == 1
    assert as_map(client.execute_command("IM.INFO", "alice"))["messages"] == 0


def test_ack_pending_and_updates_last_seen(client):
    client.execute_command("IM.CONNECT", "alice", "phone")
    store(client, "alice", message("m1"))
    seen = as_map(client.execute_command("IM.DEVICES", "alice")[0])["last_seen"]
    assert client.execute_command("IM.ACK", "alice", "phone", "m1") == 1
    dev = as_map(client.execute_command("IM.DEVICES", "alice")[0])
    assert dev["pending"] == 0 and dev["last_seen"] >= seen


def test_ack_registers_device(client):
    client.execute_command("IM.CONNECT", "alice", "phone")
    client.execute_command("IM.ACK", "alice", "watch", "none")
    devices = [as_map(d) for d in client.execute_command("IM.DEVICES", "alice")]
    assert [d["device"] for d in devices] == [b"phone", b"watch"]
    assert devices[1]["online"] == 0


# ------------------------------------------------------------ IM.OFFLINE.INFO

def test_offline_info(client, protocol):
    reply = client.execute_command("IM.OFFLINE.INFO", "nobody", "phone")
    assert_map_shape(reply, protocol, OFFLINE_INFO_FIELDS)
    assert as_map(reply) == ZERO_OFFLINE
    assert client.exists("nobody") == 0

    offline_device(client, "alice", "laptop")
    stanzas = [message(f"m{i}", body="x" * i) for i in range(1, 4)]
    seqs = [store(client, "alice", s)[0] for s in stanzas]
    reply = client.execute_command("IM.OFFLINE.INFO", "alice", "laptop")
    assert_map_shape(reply, protocol, OFFLINE_INFO_FIELDS)
    assert as_map(reply) == {"count": 3, "bytes": sum(map(len, stanzas)), "first": seqs[0], "last": seqs[2]}

    reply = client.execute_command("IM.OFFLINE.INFO", "alice", "laptop", "IDS")
    assert_map_shape(reply, protocol, OFFLINE_INFO_FIELDS + ["ids"])
    info = as_map(reply)
    assert sorted(info["ids"]) == [b"m1", b"m2", b"m3"]
    assert info["count"] == 3

    limited = as_map(client.execute_command("IM.OFFLINE.INFO", "alice", "laptop", "IDS", "LIMIT", "2"))
    assert len(limited["ids"]) == 2 and set(limited["ids"]) <= {b"m1", b"m2", b"m3"}
    assert limited["count"] == 3

    # an unregistered device is owed nothing stored before it registers
    assert as_map(client.execute_command("IM.OFFLINE.INFO", "alice", "tv")) == ZERO_OFFLINE


def test_offline_info_unregistered_device_of_empty_mailbox(client):
    # no device registered at all: a new device would get everything
    stanzas = [message(f"m{i}") for i in range(4)]
    seqs = [store(client, "bob", s)[0] for s in stanzas]
    info = as_map(client.execute_command("IM.OFFLINE.INFO", "bob", "phone"))
    assert info == {"count": 4, "bytes": sum(map(len, stanzas)), "first": seqs[0], "last": seqs[-1]}


# ------------------------------------------------------------ IM.OFFLINE.PAGE

def test_offline_page(client):
    assert client.execute_command("IM.OFFLINE.PAGE", "nobody", "phone") == [0, []]
    assert client.exists("nobody") == 0

    offline_device(client, "alice", "laptop")
    before = now_ms()
    stanzas = [message(f"m{i}") for i in range(12)]
    seqs = [store(client, "alice", s)[0] for s in stanzas]

    cursor, items = client.execute_command("IM.OFFLINE.PAGE", "alice", "laptop")
    assert len(items) == 10, "COUNT defaults to 10"
    assert cursor == seqs[9]
    for (seq, mid, ts, stanza), want_seq, want in zip(items, seqs, stanzas):
        assert (seq, stanza) == (want_seq, want)
        assert mid == ET.fromstring(want).get("id").encode()
        assert_recent(ts, before)
    assert [it[2] for it in items] == sorted(it[2] for it in items)

    cursor, items = client.execute_command("IM.OFFLINE.PAGE", "alice", "laptop", "AFTER", cursor)
    assert cursor == 0
    assert [it[0] for it in items] == seqs[10:]

    cursor, items = client.execute_command("IM.OFFLINE.PAGE", "alice", "laptop", "COUNT", "3")
    assert cursor == seqs[2] and [it[0] for it in items] == seqs[:3]
    cursor, items = client.execute_command("IM.OFFLINE.PAGE", "alice", "laptop", "COUNT", "12")
    assert cursor == 0 and len(items) == 12
    cursor, items = client.execute_command("IM.OFFLINE.PAGE", "alice", "laptop", "AFTER", seqs[-1])
    assert (cursor, items) == (0, [])


def test_offline_page_is_read_only(client):
    offline_device(client, "alice", "laptop")
    for i in range(5):
        store(client, "alice", message(f"m{i}"))
    d = digest(client, "alice")
    info = client.execute_command("IM.INFO", "alice")
    for _ in range(2):
        client.execute_command("IM.OFFLINE.PAGE", "alice", "laptop", "COUNT", "100")
        client.execute_command("IM.OFFLINE.PAGE", "alice", "laptop", "DELAY", "example.com")
    assert digest(client, "alice") == d
    assert client.execute_command("IM.INFO", "alice") == info


def xep82(ts):
    return datetime.fromtimestamp(ts // 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{ts % 1000:03d}Z"


def assert_delayed(original, got, ts, origin):
    """got is original with <delay/> inserted as the first child."""
    root = ET.fromstring(got)
    first = root[0]
    assert first.tag == "{urn:xmpp:delay}delay", got
    assert first.get("from") == origin
    assert first.get("stamp") == xep82(ts)
    assert len(root.findall("{urn:xmpp:delay}delay")) == 1
    head = original[:original.index(b">") + 1]
    assert got.startswith(head) and got.endswith(original[len(head):]), got


def test_offline_page_delay(client):
    offline_device(client, "alice", "laptop")
    plain = message("m1")
    delayed = message("m2", extra="<delay xmlns='urn:xmpp:delay' from='x.example' stamp='2002-09-10T23:08:25Z'/>")
    store(client, "alice", plain)
    store(client, "alice", delayed)

    _, items = client.execute_command("IM.OFFLINE.PAGE", "alice", "laptop", "DELAY", "example.com")
    assert_delayed(plain, items[0][3], items[0][2], "example.com")
    assert items[1][3] == delayed, "an existing delay is never doubled"

    _, items = client.execute_command("IM.OFFLINE.PAGE", "alice", "laptop")
    assert [it[3] for it in items] == [plain, delayed], "no DELAY, no delay-from: stanzas as stored"

    client.config_set("im.delay-from", "server.example")
    _, items = client.execute_command("IM.OFFLINE.PAGE", "alice", "laptop")
    assert_delayed(plain, items[0][3], items[0][2], "server.example")
    assert items[1][3] == delayed


def test_offline_page_delay_from_is_escaped_or_refused(client):
    offline_device(client, "alice", "laptop")
    plain = message("m1")
    store(client, "alice", plain)
    _, items = client.execute_command("IM.OFFLINE.PAGE", "alice", "laptop", "DELAY", "a&b<'\"")
    assert_delayed(plain, items[0][3], items[0][2], "a&b<'\"")
    for bad in (b"a\x00b", b"\x1b", b"\xff", "\ufffe".encode()):
        with pytest.raises(redis.ResponseError, match="DELAY from"):
            client.execute_command("IM.OFFLINE.PAGE", "alice", "laptop", "DELAY", bad)


# ------------------------------------------------------------ IM.INFO

def test_info(client, protocol):
    reply = client.execute_command("IM.INFO", "nobody")
    assert_map_shape(reply, protocol, INFO_FIELDS)
    assert as_map(reply) == ZERO_INFO
    assert client.exists("nobody") == 0

    client.execute_command("IM.CONNECT", "alice", "phone")
    offline_device(client, "alice", "laptop")
    m1, m2 = message("m1"), message("m2", body="longer body")
    s1 = store(client, "alice", m1)[0]
    s2 = store(client, "alice", m2)[0]
    reply = client.execute_command("IM.INFO", "alice")
    assert_map_shape(reply, protocol, INFO_FIELDS)
    info = as_map(reply)
    assert {k: info[k] for k in INFO_FIELDS if k != "next_seq"} == {
        "messages": 2, "bytes": len(m1) + len(m2), "devices": 2, "online": 1, "pending": 2,
        "first": s1, "last": s2, "queued": 0}
    assert info["next_seq"] > s2
    s3 = store(client, "alice", message("m3"))[0]
    assert s3 >= info["next_seq"]


# ------------------------------------------------------------ seq

def test_seq_strictly_increasing_and_never_reused(r):
    pipe = r.pipeline(transaction=False)
    for i in range(300):
        pipe.execute_command("IM.STORE", "alice", message(f"m{i}"))
    seqs = [rep[0] for rep in pipe.execute()]
    assert all(a < b for a, b in zip(seqs, seqs[1:]))

    # delete and re-create the mailbox at once (same millisecond): no seq reused
    pipe = r.pipeline(transaction=True)
    for i in range(5):
        pipe.execute_command("IM.STORE", "bob", message(f"b{i}"))
    pipe.delete("bob")
    pipe.execute_command("IM.STORE", "bob", message("again"))
    replies = pipe.execute()
    old = [rep[0] for rep in replies[:5]]
    assert replies[6][0] > max(old), f"seq reused after re-creation: {replies[6][0]} <= {max(old)}"


# ------------------------------------------------------------ settings

DEFAULTS = {
    "resend-interval": "3000", "ack-timeout": "10000", "max-pending": "1000",
    "sweep-interval": "100", "sweep-budget": "1000", "max-stanza-bytes": "65536",
    "max-messages": "10000", "max-bytes": str(16 * 1024 * 1024), "quota-policy": "reject",
    "offline-types": "chat normal", "retention": str(7 * 24 * 3600 * 1000), "archive": "no",
    "mailbox-idle": str(30 * 24 * 3600 * 1000), "device-idle": str(30 * 24 * 3600 * 1000),
    "event-prefix": "im:events:", "delay-from": "",
}


def settings(r, pattern="im.*"):
    """CONFIG GET as a dict of str (redis-py decodes some replies itself)."""
    return {text(k): text(v) for k, v in r.config_get(pattern).items()}


def test_settings_defaults(r):
    got = {k.removeprefix("im."): v for k, v in settings(r).items()}
    assert {k: got.get(k) for k in DEFAULTS} == DEFAULTS


@pytest.mark.module_args("max-messages", "5", "quota-policy", "drop-oldest", "archive", "yes",
                         "offline-types", "chat", "delay-from", "example.com")
def test_settings_at_load_time(r):
    got = settings(r)
    assert got["im.max-messages"] == "5"
    assert got["im.quota-policy"] == "drop-oldest"
    assert got["im.archive"] == "yes"
    assert got["im.offline-types"] == "chat"
    assert got["im.delay-from"] == "example.com"


def test_settings_at_run_time(r):
    for name, value in [("max-messages", "7"), ("quota-policy", "drop-oldest"), ("archive", "yes"),
                        ("offline-types", "chat normal headline"), ("event-prefix", "ev:")]:
        assert r.config_set(f"im.{name}", value)
        assert settings(r, f"im.{name}") == {f"im.{name}": value}
