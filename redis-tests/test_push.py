"""Push hints (SPEC §5): when messages become offline for a device (stored
while it was offline, expired, moved by IM.DISCONNECT or a kick), one
`offline` event per device per command or timer run goes to
`<event-prefix>push`, with the device's newest offline message and its
offline count, so that a server can wake a phone (XEP-0357). None for what
the offline policy drops, none for a device that is online, none while
`push-events` is off; replicas never send them."""

import base64

import pytest

from helpers import chat_state, message, wait_replica_synced

FIELDS = {"event", "user", "device", "seq", "id", "count"}


def offline_events(events):
    return [e for e in events.got if e["event"] == "offline"]


def clean(e):
    return {k: v for k, v in e.items() if not k.startswith("_")}


def test_a_store_to_an_offline_device_sends_one_hint_per_device(r, server, subscribe):
    push = subscribe(server, "push")
    r.execute_command("IM.CONNECT", "bob", "phone", "NODE", "n1")
    r.execute_command("IM.CONNECT", "bob", "laptop", "NODE", "n1")
    r.execute_command("IM.DISCONNECT", "bob", "phone")
    seq = r.execute_command("IM.STORE", "bob", message("m1"))[0]
    n = push.mark(r)
    got = offline_events(push)[:n]
    # The laptop is online (the message is pending there): no hint for it.
    assert [clean(e) for e in got] == [
        {"event": "offline", "user": "bob", "device": "phone", "seq": seq, "id": "m1", "count": 1}]
    seq2 = r.execute_command("IM.STORE", "bob", message("m2"))[0]
    push.mark(r)
    assert clean(offline_events(push)[-1]) == \
        {"event": "offline", "user": "bob", "device": "phone", "seq": seq2, "id": "m2", "count": 2}


def test_nothing_for_what_the_policy_drops_or_an_online_device(r, server, subscribe):
    push = subscribe(server, "push")
    r.execute_command("IM.CONNECT", "bob", "phone", "NODE", "n1")
    r.execute_command("IM.DISCONNECT", "bob", "phone")
    r.execute_command("IM.CONNECT", "bob", "laptop", "NODE", "n1")
    assert r.execute_command("IM.STORE", "bob", chat_state("c1")) is not None  # pending on the laptop
    assert r.execute_command("IM.STORE", "bob", message("g1", type="groupchat")) is not None
    r.execute_command("IM.STORE", "bob", message("h1", extra="<no-store xmlns='urn:xmpp:hints'/>"))
    # The laptop acks nothing and disconnects: volatile messages are
    # dropped, not kept offline, so no hint.
    assert r.execute_command("IM.DISCONNECT", "bob", "laptop") == 0
    push.mark(r)
    assert offline_events(push) == []


def test_a_disconnect_moving_many_sends_one_hint(r, server, subscribe):
    push = subscribe(server, "push")
    r.execute_command("IM.CONNECT", "bob", "phone", "NODE", "n1")
    seqs = [r.execute_command("IM.STORE", "bob", message(f"m{i}"))[0] for i in range(50)]
    push.mark(r)
    assert offline_events(push) == []
    assert r.execute_command("IM.DISCONNECT", "bob", "phone") == 50
    push.mark(r)
    got = offline_events(push)
    assert [clean(e) for e in got] == [
        {"event": "offline", "user": "bob", "device": "phone", "seq": seqs[-1], "id": "m49", "count": 50}]


@pytest.mark.module_args("ack-timeout", "200", "resend-interval", "0", "sweep-interval", "10")
def test_an_expiry_sends_one_hint_per_device_per_run(r, server, subscribe):
    push = subscribe(server, "push")
    kicks = subscribe(server, "n1")
    for d in ("phone", "watch"):
        r.execute_command("IM.CONNECT", "bob", d, "NODE", "n1")
    for i in range(5):
        r.execute_command("IM.STORE", "bob", message(f"m{i}"))
    push.wait(lambda got: len(offline_events(push)) >= 2, what="a hint per device")
    push.watch(0.5)
    got = sorted((e["device"], e["count"]) for e in offline_events(push))
    assert got == [("phone", 5), ("watch", 5)]
    kicks.wait(lambda got: len([e for e in got if e["event"] == "kick"]) == 2, what="the kicks")


@pytest.mark.module_args("max-pending", "2")
def test_a_kick_for_max_pending_sends_a_hint(r, server, subscribe):
    push = subscribe(server, "push")
    r.execute_command("IM.CONNECT", "bob", "phone", "NODE", "n1")
    for i in range(3):
        r.execute_command("IM.STORE", "bob", message(f"m{i}"))
    push.mark(r)
    got = offline_events(push)
    assert [(e["device"], e["count"]) for e in got] == [("phone", 3)]


def test_push_events_can_be_turned_off(r, server, subscribe):
    push = subscribe(server, "push")
    r.config_set("im.push-events", "no")
    r.execute_command("IM.CONNECT", "bob", "phone", "NODE", "n1")
    r.execute_command("IM.DISCONNECT", "bob", "phone")
    r.execute_command("IM.STORE", "bob", message("m1"))
    push.mark(r)
    assert offline_events(push) == []
    r.config_set("im.push-events", "yes")
    r.execute_command("IM.STORE", "bob", message("m2"))
    push.mark(r)
    assert len(offline_events(push)) == 1


def test_binary_names_come_as_base64(r, server, subscribe):
    push = subscribe(server, "push")
    r.execute_command("IM.CONNECT", b"\xffbob", b"\xc3phone", "NODE", "n1")
    r.execute_command("IM.DISCONNECT", b"\xffbob", b"\xc3phone")
    r.execute_command("IM.STORE", b"\xffbob", message(None), "ID", b"id\xfe")
    push.mark(r)
    [e] = offline_events(push)
    assert set(clean(e)) == {"event", "user_base64", "device_base64", "seq", "id_base64", "count"}
    assert base64.b64decode(e["user_base64"]) == b"\xffbob"
    assert base64.b64decode(e["device_base64"]) == b"\xc3phone"
    assert base64.b64decode(e["id_base64"]) == b"id\xfe"


def test_replicas_send_no_hints(make_server, subscribe):
    primary = make_server()
    replica = make_server(replicaof=primary)
    wait_replica_synced(primary, replica)
    on_replica = subscribe(replica, "push")
    on_primary = subscribe(primary, "push")
    r = primary.client()
    r.execute_command("IM.CONNECT", "bob", "phone", "NODE", "n1")
    r.execute_command("IM.DISCONNECT", "bob", "phone")
    r.execute_command("IM.STORE", "bob", message("m1"))
    wait_replica_synced(primary, replica)
    on_primary.mark(r)
    assert len(offline_events(on_primary)) == 1
    on_replica.mark(replica.client())
    assert offline_events(on_replica) == []
