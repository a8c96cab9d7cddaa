#!/usr/bin/env python3
"""Memory of small mailboxes, for one build of the module: what a user with
one registered device costs before any message, what each offline message
adds after that (used_memory after the messages minus after the users,
divided by the messages), the same counted from an empty server, and what
a second and a third registered device add, each and on average (the
per-device figure docs/DESIGN.md gives). A quick check of one layout
change; scripts/bench measures the full matrix against the other layouts.

    python3 bench/mailbox-memory.py MODULE.so [--pending]

Runs Debian's redis-server on a free port for each of 100,000 users x 1
message, 20,000 x 5 and 1,000 x 100 (a 192-byte chat stanza, its own id
each), with the device offline (or online with --pending).
"""
import argparse
import os

from local_server import chat_stanza, server

STANZA = chat_stanza("x{:07d}")


def run(module, users, per_user, pending):
    with server(module) as (r, _port):
        def used():
            return r.info("memory")["used_memory"]

        def batch(cmds):
            pipe = r.pipeline(transaction=False)
            for i, c in enumerate(cmds, 1):
                pipe.execute_command(*c)
                if i % 5000 == 0:
                    pipe.execute()
            pipe.execute()

        keys = [f"user:{i:012d}" for i in range(users)]
        empty = used()
        batch([("IM.CONNECT", k, "phone", "NODE", "n1") for k in keys])
        if not pending:
            batch([("IM.DISCONNECT", k, "phone") for k in keys])
        with_users = used()
        n = users * per_user
        batch([("IM.STORE", keys[i % users], STANZA.format(i)) for i in range(n)])
        with_messages = used()
        batch([("IM.CONNECT", k, "tablet", "NODE", "n1") for k in keys])
        batch([("IM.DISCONNECT", k, "tablet") for k in keys])
        with_second = used()
        batch([("IM.CONNECT", k, "laptop", "NODE", "n1") for k in keys])
        batch([("IM.DISCONNECT", k, "laptop") for k in keys])
        with_third = used()
    size = len(STANZA.format(0))
    per_msg = (with_messages - with_users) / n
    print(f"{users:>7,} users x {per_user:<3} {'pending' if pending else 'offline'}: "
          f"user {(with_users - empty) / users:4.0f} B, "
          f"message {per_msg:4.0f} B ({per_msg / size:.2f}x the {size}-byte stanza), "
          f"from empty {(with_messages - empty) / n:4.0f} B, "
          f"second device {(with_second - with_messages) / users:4.0f} B, "
          f"third {(with_third - with_second) / users:4.0f} B, "
          f"mean {(with_third - with_messages) / users / 2:4.0f} B", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("module")
    ap.add_argument("--pending", action="store_true")
    a = ap.parse_args()
    module = os.path.abspath(a.module)
    for users, per_user in ((100_000, 1), (20_000, 5), (1_000, 100)):
        run(module, users, per_user, a.pending)


if __name__ == "__main__":
    main()
