#!/usr/bin/env python3
"""The seed's flow against a redis-im server, with redis-py.

    python3 seed_flow.py [host [port]]      (or REDIS_HOST, REDIS_PORT, REDIS_PASSWORD)

A device connects on an IM node, gets a message and acks it, goes offline,
misses three messages, comes back, reads the summary, pages and acks. Then a
message is left unacked: the node hears `resend` events on its channel and
finally a `kick`, and the device fetches the message when it reconnects.
Every reply is checked; the exit status is 1 when one differs.
"""
import json
import os
import sys
import time

import redis

HOST = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("REDIS_HOST", "127.0.0.1")
PORT = int(sys.argv[2] if len(sys.argv) > 2 else os.environ.get("REDIS_PORT", "6379"))
USER = f"alice-py-{os.getpid()}@example.com"
DEVICE = "phone"
NODE = f"xmpp-py-{os.getpid()}"
# Short timer settings so that the events come within seconds.
SETTINGS = {"im.resend-interval": "400", "im.ack-timeout": "2000"}


def expect(what, got, want):
    if got != want:
        print(f"FAIL {what}: got {got!r}, expected {want!r}")
        sys.exit(1)


def as_map(reply):
    """A map reply as a dict: RESP3 (redis-py 8's default) gives one already,
    RESP2 a flat list [k1, v1, k2, v2, ...]."""
    return reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2]))


def stanza(msg_id, text):
    return (f"<message from='bob@example.com/pc' to='{USER}' id='{msg_id}' type='chat'>"
            f"<body>{text}</body></message>")


r = redis.Redis(host=HOST, port=PORT, password=os.environ.get("REDIS_PASSWORD") or None,
                decode_responses=True)
print(f"redis-py {redis.__version__} -> {HOST}:{PORT}, user {USER}")
saved = r.config_get("im.*")
prefix = saved["im.event-prefix"]

# The IM node listens on its own channel before it takes sessions.
events = r.pubsub(ignore_subscribe_messages=True)
events.subscribe(prefix + NODE)
print(f"node {NODE} listens on {prefix + NODE}")
try:
    for name, value in SETTINGS.items():
        r.config_set(name, value)
    print(f"CONFIG SET resend-interval 400 ms, ack-timeout 2000 ms (were "
          f"{saved['im.resend-interval']}, {saved['im.ack-timeout']})")

    # 1. The device connects; a message is delivered and acked.
    info = as_map(r.execute_command("IM.CONNECT", USER, DEVICE, "NODE", NODE))
    expect("IM.CONNECT count", info["count"], 0)
    print(f"{DEVICE} connects on {NODE}: nothing missed")
    seq, msg_id, pending = r.execute_command("IM.STORE", USER, stanza("m1", "Hi Alice"), "DEVICES", 1, DEVICE)
    expect("IM.STORE m1", (msg_id, pending), ("m1", [DEVICE]))
    print(f"stored m1 (seq {seq}), delivered to {DEVICE}")
    expect("IM.ACK m1", r.execute_command("IM.ACK", USER, DEVICE, "m1"), 1)
    expect("messages after the ack", as_map(r.execute_command("IM.INFO", USER))["messages"], 0)
    print(f"{DEVICE} acks m1: the mailbox is empty")

    # 2. The device goes offline; messages are kept for it.
    expect("IM.DISCONNECT", r.execute_command("IM.DISCONNECT", USER, DEVICE), 0)
    print(f"{DEVICE} disconnects")
    sent = {}
    for msg_id, text in [("m2", "Lunch?"), ("m3", "12:30 at the usual place"), ("m4", "Call me")]:
        seq, got_id, pending = r.execute_command("IM.STORE", USER, stanza(msg_id, text))
        expect(f"IM.STORE {msg_id}", (got_id, pending), (msg_id, []))
        sent[seq] = (msg_id, stanza(msg_id, text))
        print(f"stored {msg_id} (seq {seq}) offline")
    seqs = sorted(sent)

    # 3. It comes back: summary, pages, ack.
    info = as_map(r.execute_command("IM.CONNECT", USER, DEVICE, "NODE", NODE))
    expect("IM.CONNECT summary", (info["count"], info["first"], info["last"]), (3, seqs[0], seqs[-1]))
    expect("bytes", info["bytes"], sum(len(s.encode()) for _, s in sent.values()))
    print(f"{DEVICE} reconnects: {info['count']} missed, {info['bytes']} bytes, seq {info['first']}..{info['last']}")
    info = as_map(r.execute_command("IM.OFFLINE.INFO", USER, DEVICE, "IDS"))
    expect("IM.OFFLINE.INFO ids", info["ids"], ["m2", "m3", "m4"])
    print(f"offline ids: {' '.join(info['ids'])}")
    cursor, got = 0, []
    while True:
        cursor, page = r.execute_command("IM.OFFLINE.PAGE", USER, DEVICE, "AFTER", cursor, "COUNT", 2)
        got += [(seq, (msg_id, body)) for seq, msg_id, _ts, body in page]
        print(f"page: {' '.join(m[1] for m in page)} (cursor {cursor})")
        if cursor == 0:
            break
    expect("paged messages", got, sorted(sent.items()))
    expect("IM.ACK UPTO", r.execute_command("IM.ACK", USER, DEVICE, "UPTO", seqs[-1]), 3)
    expect("offline after the ack", as_map(r.execute_command("IM.OFFLINE.INFO", USER, DEVICE))["count"], 0)
    print(f"{DEVICE} acks UPTO {seqs[-1]}: 3 acked")

    # 4. A message the device never acks: resend events, then a kick.
    m5 = stanza("m5", "Are you there?")
    seq5, _, pending = r.execute_command("IM.STORE", USER, m5, "DEVICES", 1, DEVICE)
    expect("IM.STORE m5 pending", pending, [DEVICE])
    print(f"stored m5 (seq {seq5}), delivered to {DEVICE}, which does not ack")
    attempts, kicked, deadline = [], False, time.monotonic() + 15
    while not kicked and time.monotonic() < deadline:
        msg = events.get_message(timeout=1.0)
        if msg is None:
            continue
        event = json.loads(msg["data"])
        expect("event target", (event["user"], event["device"], event["seq"], event["id"]), (USER, DEVICE, seq5, "m5"))
        if event["event"] == "resend":
            expect("resent stanza", event["stanza"], m5)
            attempts.append(event["attempt"])
            print(f"event resend m5, attempt {event['attempt']}: the node writes the stanza to the session again")
        elif event["event"] == "kick":
            expect("kick reason", event["reason"], "ack-timeout")
            kicked = True
            print(f"event kick {DEVICE} ({event['reason']}): the node closes the session")
        else:
            expect("event kind", event["event"], "resend or kick")
    expect("kicked within 15 s", kicked, True)
    expect("resend attempts", attempts, list(range(2, 2 + max(len(attempts), 1))))
    devices = [as_map(d) for d in r.execute_command("IM.DEVICES", USER)]
    expect("IM.DEVICES after the kick", [(d["device"], d["online"], d["pending"], d["offline"]) for d in devices],
           [(DEVICE, 0, 0, 1)])
    info = as_map(r.execute_command("IM.CONNECT", USER, DEVICE, "NODE", NODE))
    expect("IM.CONNECT after the kick", info["count"], 1)
    cursor, page = r.execute_command("IM.OFFLINE.PAGE", USER, DEVICE)
    expect("page after the kick", (cursor, [(m[0], m[1], m[3]) for m in page]), (0, [(seq5, "m5", m5)]))
    expect("IM.ACK m5", r.execute_command("IM.ACK", USER, DEVICE, "m5"), 1)
    expect("messages at the end", as_map(r.execute_command("IM.INFO", USER))["messages"], 0)
    print(f"{DEVICE} reconnects, pages m5, acks it by id: the mailbox is empty")
finally:
    for name in SETTINGS:
        r.config_set(name, saved[name])
    r.delete(USER)
    events.close()
print("OK")
