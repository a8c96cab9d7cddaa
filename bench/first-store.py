#!/usr/bin/env python3
"""The server's own time per IM.STORE that is a mailbox's first message, for
two builds (or one build under two settings) side by side.

    python3 bench/first-store.py A.so B.so [--mode pending|offline]
        [--users 100000] [--rounds 8] [--config NAME=VALUE ...]
        [--b-config NAME=VALUE ...]

One server per side, both running for the whole comparison. Every round,
each side in turn (the order alternating): FLUSHALL, `--users` users
registered (one device `phone`, online for `pending`, disconnected for
`offline`), `redis-benchmark -c 32 -P 16` of as many IM.STORE as there are
users on random users (`DEVICES 1 phone` for `pending`), and INFO
commandstats' usec_per_call of `im.store`. Most stores are thus a
mailbox's first, which is what a service with many users and few messages
does most. `--config` sets a setting on both sides, `--b-config` on side B only: with the same build
on both sides it measures what the setting costs (`--b-config
im.retention=0` leaves out the schedule's move on a first offline
message). Prints each round, the medians, and in how many rounds B was
quicker: on a shared machine the pairs say more than the medians.
"""
import argparse
import contextlib
import os
import statistics
import subprocess

from local_server import RANDOM_ID, chat_stanza, register_users, server

STANZA = chat_stanza(RANDOM_ID)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--mode", choices=("pending", "offline"), default="offline")
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--config", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--b-config", action="append", default=[], metavar="NAME=VALUE")
    opts = ap.parse_args()
    args = ["IM.STORE", "user:__rand_int__", STANZA]
    if opts.mode == "pending":
        args += ["DEVICES", "1", "phone"]
    times = {"A": [], "B": []}
    with contextlib.ExitStack() as stack:
        sides = {"A": stack.enter_context(server(os.path.abspath(opts.a))),
                 "B": stack.enter_context(server(os.path.abspath(opts.b)))}
        for side, settings in (("A", opts.config), ("B", opts.config + opts.b_config)):
            for setting in settings:
                name, _, value = setting.partition("=")
                sides[side][0].config_set(name, value)
        for i in range(opts.rounds):
            for side in ("A", "B") if i % 2 == 0 else ("B", "A"):
                r, port = sides[side]
                r.flushall()
                register_users(r, opts.users, opts.mode == "offline")
                r.config_resetstat()
                subprocess.run(["redis-benchmark", "-p", str(port), "-c", "32", "-P", "16",
                                "-n", str(opts.users), "-r", str(opts.users), "-q", *args],
                               stdout=subprocess.DEVNULL, check=True)
                times[side].append(r.info("commandstats")["cmdstat_im.store"]["usec_per_call"])
            print(f"round {i + 1}: A {times['A'][-1]:.2f} µs, B {times['B'][-1]:.2f} µs", flush=True)
    quicker = sum(b < a for a, b in zip(times["A"], times["B"]))
    print(f"medians: A {statistics.median(times['A']):.2f} µs, B {statistics.median(times['B']):.2f} µs; "
          f"B quicker in {quicker} of {opts.rounds} rounds")


if __name__ == "__main__":
    main()
