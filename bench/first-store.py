#!/usr/bin/env python3
"""The server's own time per IM.STORE that is a mailbox's first message, for
two builds (or one build under two settings) side by side; with --keep,
of stores into mailboxes that fill round by round.

    python3 bench/first-store.py A.so B.so [--mode pending|offline]
        [--users 100000] [--rounds 8] [--config NAME=VALUE ...]
        [--b-config NAME=VALUE ...] [--keep --stores 20000] [--pin]

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
message). --keep registers the users once and keeps the messages: each
round stores `--stores` messages on random users (the mailboxes hold a
few messages after a few rounds, as most do). --pin runs each server on
the second core and redis-benchmark on the first. Prints each round, the
medians, in how many rounds B was quicker, and the median of the rounds'
differences B - A with a 95 % bootstrap interval: on a shared machine,
whose speed drifts by a third over minutes, the pairs say more than the
medians. Side B measures quicker than side A: with the same build on
both sides, by 0.065 µs a pending store (interval 0.040 to 0.080, B
quicker in 24 of 30 rounds; 100,000 users, --pin, 2026-12-02), and by
0 to 0.15 µs in three comparisons run both ways later that day, for no
reason found yet. Run each comparison with the builds in both places and
take the mean of the two.
"""
import argparse
import contextlib
import os
import random
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
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--stores", type=int, default=20_000)
    ap.add_argument("--pin", action="store_true")
    opts = ap.parse_args()
    pin = ["taskset", "-c", "0"] if opts.pin else []
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
            r = sides[side][0]
            if opts.pin:
                subprocess.run(["taskset", "-p", "-c", "1", str(r.info("server")["process_id"])],
                               stdout=subprocess.DEVNULL, check=True)
            if opts.keep:
                register_users(r, opts.users, opts.mode == "offline")
        for i in range(opts.rounds):
            for side in ("A", "B") if i % 2 == 0 else ("B", "A"):
                r, port = sides[side]
                if not opts.keep:
                    r.flushall()
                    register_users(r, opts.users, opts.mode == "offline")
                r.config_resetstat()
                stores = opts.stores if opts.keep else opts.users
                subprocess.run([*pin, "redis-benchmark", "-p", str(port), "-c", "32", "-P", "16",
                                "-n", str(stores), "-r", str(opts.users), "-q", *args],
                               stdout=subprocess.DEVNULL, check=True)
                times[side].append(r.info("commandstats")["cmdstat_im.store"]["usec_per_call"])
            print(f"round {i + 1}: A {times['A'][-1]:.2f} µs, B {times['B'][-1]:.2f} µs", flush=True)
    quicker = sum(b < a for a, b in zip(times["A"], times["B"]))
    print(f"medians: A {statistics.median(times['A']):.2f} µs, B {statistics.median(times['B']):.2f} µs; "
          f"B quicker in {quicker} of {opts.rounds} rounds")
    diffs = [b - a for a, b in zip(times["A"], times["B"])]
    resampled = sorted(statistics.median(random.choices(diffs, k=len(diffs))) for _ in range(2000))
    print(f"B - A: median {statistics.median(diffs):+.3f} µs, 95 % bootstrap interval "
          f"{resampled[50]:+.3f} to {resampled[1949]:+.3f} µs")


if __name__ == "__main__":
    main()
