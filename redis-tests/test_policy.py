"""The offline policy, duplicates and quotas (SPEC §3)."""

import pytest

from helpers import HINTS, RawError, as_map, chat_state, digest, expect_error, message

NOT_KEPT = {
    "groupchat": message("x1", type="groupchat"),
    "headline": message("x1", type="headline"),
    "error": message("x1", type="error"),
    "chat-state-only": chat_state("x1"),
    "gone-state-only": chat_state("x1", state="gone"),
    "no-store": message("x1", extra=f"<no-store xmlns='{HINTS}'/>"),
    "no-permanent-store": message("x1", extra=f"<no-permanent-store xmlns='{HINTS}'/>"),
    "iq": b"<iq type='set' id='x1' to='alice@example.com/phone'><query xmlns='jabber:iq:roster'/></iq>",
    "presence": b"<presence id='x1' from='bob@example.com/pc' to='alice@example.com'/>",
}
MESSAGES_NOT_KEPT = ["groupchat", "headline", "error", "chat-state-only"]
KEPT = {
    "chat": message("k1"),
    "no-type": message("k1", type=None),
    "normal": message("k1", type="normal"),
    "chat-state-with-body": chat_state("k1", body="hi"),
}


def info(r, user="alice"):
    return as_map(r.execute_command("IM.INFO", user))


def offline_count(r, device, user="alice"):
    return as_map(r.execute_command("IM.OFFLINE.INFO", user, device))["count"]


def laptop_offline(r):
    r.execute_command("IM.CONNECT", "alice", "laptop")
    r.execute_command("IM.DISCONNECT", "alice", "laptop")


@pytest.mark.parametrize("kind", NOT_KEPT)
def test_not_kept_offline(r, kind):
    laptop_offline(r)
    assert r.execute_command("IM.STORE", "alice", NOT_KEPT[kind]) is None
    assert info(r)["messages"] == 0
    assert offline_count(r, "laptop") == 0
    # nor in a mailbox without any device
    assert r.execute_command("IM.STORE", "bob", NOT_KEPT[kind]) is None
    assert info(r, "bob")["messages"] == 0


@pytest.mark.parametrize("kind", NOT_KEPT)
def test_not_kept_is_tracked_while_pending_then_dropped(r, kind):
    r.execute_command("IM.CONNECT", "alice", "phone")
    laptop_offline(r)
    seq, mid, pending = r.execute_command("IM.STORE", "alice", NOT_KEPT[kind])
    assert (mid, pending) == (b"x1", [b"phone"])
    assert info(r)["messages"] == 1
    assert offline_count(r, "laptop") == 0
    # the session goes away before acking: dropped, not offline
    assert r.execute_command("IM.DISCONNECT", "alice", "phone") == 0
    assert offline_count(r, "phone") == 0
    assert info(r)["messages"] == 0


def test_not_kept_acked_while_pending(r):
    r.execute_command("IM.CONNECT", "alice", "phone")
    laptop_offline(r)
    r.execute_command("IM.STORE", "alice", NOT_KEPT["groupchat"])
    assert r.execute_command("IM.ACK", "alice", "phone", "x1") == 1
    assert info(r)["messages"] == 0


@pytest.mark.parametrize("kind", NOT_KEPT)
def test_force_overrides(r, kind):
    laptop_offline(r)
    reply = r.execute_command("IM.STORE", "alice", NOT_KEPT[kind], "FORCE")
    assert reply is not None and reply[1] == b"x1"
    assert info(r)["messages"] == 1
    assert offline_count(r, "laptop") == 1


@pytest.mark.parametrize("kind", MESSAGES_NOT_KEPT)
def test_store_hint_overrides(r, kind):
    laptop_offline(r)
    stanza = NOT_KEPT[kind].replace(b"</message>", f"<store xmlns='{HINTS}'/></message>".encode())
    reply = r.execute_command("IM.STORE", "alice", stanza)
    assert reply is not None and reply[1] == b"x1"
    assert offline_count(r, "laptop") == 1


@pytest.mark.parametrize("kind", KEPT)
def test_kept_offline(r, kind):
    laptop_offline(r)
    assert r.execute_command("IM.STORE", "alice", KEPT[kind])[1] == b"k1"
    assert offline_count(r, "laptop") == 1


def test_offline_types_setting(r):
    laptop_offline(r)
    r.config_set("im.offline-types", "chat normal headline")
    assert r.execute_command("IM.STORE", "alice", message("h1", type="headline")) is not None
    r.config_set("im.offline-types", "chat")
    assert r.execute_command("IM.STORE", "alice", message("n1", type="normal")) is None
    assert r.execute_command("IM.STORE", "alice", message("n2", type=None)) is None
    assert r.execute_command("IM.STORE", "alice", message("c1")) is not None
    assert as_map(r.execute_command("IM.OFFLINE.INFO", "alice", "laptop", "IDS"))["ids"] == [b"h1", b"c1"]


@pytest.mark.parametrize("value", ["bogus", "Chat normal", "chat normal nromal", "chat;normal",
                                   "chat\u00a0normal", "chat\x0bnormal", "chat\u3000normal"])
def test_offline_types_refuses_a_name_rfc_6121_does_not_define(r, raw, value):
    """A stanza's unknown type is handled as normal (RFC 6121 §5.2.2), so an
    unknown name in the setting would match nothing: it is refused, and
    chat messages are still kept offline."""
    laptop_offline(r)
    before = r.config_get("im.offline-types")
    err = expect_error(raw, "CONFIG", "SET", "im.offline-types", value)
    assert "RFC 6121 message types" in err, err
    assert r.config_get("im.offline-types") == before
    assert r.execute_command("IM.STORE", "alice", message("c1")) is not None
    assert offline_count(r, "laptop") == 1


@pytest.mark.parametrize("value", ["normal,chat", " chat\tnormal  groupchat,headline,error ", ""])
def test_offline_types_takes_every_rfc_6121_name_and_none(r, value):
    r.config_set("im.offline-types", value)
    assert r.config_get("im.offline-types") == {"im.offline-types": value}


# ------------------------------------------------------------ duplicates

def test_duplicate_ids_store_once(r):
    laptop_offline(r)
    first = message("m1", body="original")
    seq = r.execute_command("IM.STORE", "alice", first)[0]
    before = digest(r, "alice")
    assert r.execute_command("IM.STORE", "alice", message("m1", body="resent"))[:2] == [seq, b"m1"]
    assert r.execute_command("IM.STORE", "alice", message("zz"), "ID", "m1")[:2] == [seq, b"m1"]
    assert digest(r, "alice") == before
    i = info(r)
    assert (i["messages"], i["bytes"]) == (1, len(first))
    _, items = r.execute_command("IM.OFFLINE.PAGE", "alice", "laptop")
    assert [it[3] for it in items] == [first]

    # once the mailbox no longer holds it, the id may be stored again, as new
    assert r.execute_command("IM.ACK", "alice", "laptop", "m1") == 1
    again = r.execute_command("IM.STORE", "alice", message("m1", body="new"))[0]
    assert again > seq


def test_duplicates_in_a_pipeline(r):
    laptop_offline(r)
    pipe = r.pipeline(transaction=False)
    for i in range(200):
        pipe.execute_command("IM.STORE", "alice", message(f"m{i % 50}"))
    replies = pipe.execute()
    seqs = {}
    for i, rep in enumerate(replies):
        seqs.setdefault(i % 50, rep[0])
        assert rep[0] == seqs[i % 50]
    assert info(r)["messages"] == 50


# ------------------------------------------------------------ quotas

def store_err(raw, *args):
    return raw.call("IM.STORE", *args)


@pytest.mark.module_args("max-messages", "5")
def test_max_messages_reject(r, raw):
    laptop_offline(r)
    seqs = [r.execute_command("IM.STORE", "alice", message(f"m{i}"))[0] for i in range(5)]
    d = digest(r, "alice")
    reply = store_err(raw, "alice", message("m5"))
    assert isinstance(reply, RawError) and str(reply).startswith("IMFULL"), reply
    assert digest(r, "alice") == d
    assert info(r)["messages"] == 5
    # a retry of a message already held is not refused
    assert r.execute_command("IM.STORE", "alice", message("m2"))[:2] == [seqs[2], b"m2"]
    # room again once one leaves
    r.execute_command("IM.ACK", "alice", "laptop", "m0")
    assert r.execute_command("IM.STORE", "alice", message("m5"))[1] == b"m5"
    assert isinstance(store_err(raw, "alice", message("m6")), RawError)


def test_max_bytes_reject(r, raw):
    laptop_offline(r)
    stanza = message("m0", body="x" * 200)
    r.config_set("im.max-bytes", str(3 * len(stanza) + len(stanza) // 2))
    for i in range(3):
        r.execute_command("IM.STORE", "alice", message(f"m{i}", body="x" * 200))
    d = digest(r, "alice")
    reply = store_err(raw, "alice", message("m3", body="x" * 200))
    assert isinstance(reply, RawError) and str(reply).startswith("IMFULL"), reply
    assert digest(r, "alice") == d
    # a smaller one still fits
    assert r.execute_command("IM.STORE", "alice", message("s", body="y"))[1] == b"s"


@pytest.mark.module_args("quota-policy", "drop-oldest", "max-messages", "5")
def test_max_messages_drop_oldest(r):
    laptop_offline(r)
    stored = [r.execute_command("IM.STORE", "alice", message(f"m{i}")) for i in range(8)]
    assert all(rep is not None for rep in stored)
    i = info(r)
    assert (i["messages"], i["first"], i["last"]) == (5, stored[3][0], stored[7][0])
    _, items = r.execute_command("IM.OFFLINE.PAGE", "alice", "laptop")
    assert [it[1] for it in items] == [b"m3", b"m4", b"m5", b"m6", b"m7"]


def test_max_bytes_drop_oldest(r):
    laptop_offline(r)
    small = [message(f"s{i}", body="x" * 100) for i in range(4)]
    r.config_set("im.quota-policy", "drop-oldest")
    r.config_set("im.max-bytes", str(sum(map(len, small)) + 10))
    for s in small:
        r.execute_command("IM.STORE", "alice", s)
    # needs the room of three small ones: 2L + 10 < len(big) <= 3L + 10
    big = message("big", body="y" * (100 + len(small[0]) * 3 // 2))
    assert r.execute_command("IM.STORE", "alice", big)[1] == b"big"
    i = info(r)
    assert i["bytes"] <= sum(map(len, small)) + 10
    assert i["bytes"] == len(small[3]) + len(big)
    _, items = r.execute_command("IM.OFFLINE.PAGE", "alice", "laptop")
    assert [it[1] for it in items] == [b"s3", b"big"]


def test_quota_is_per_mailbox(r):
    r.config_set("im.max-messages", "3")
    for user in ("alice", "bob"):
        for i in range(3):
            r.execute_command("IM.STORE", user, message(f"m{i}"))
    assert info(r, "alice")["messages"] == 3 and info(r, "bob")["messages"] == 3
