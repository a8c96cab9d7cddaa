#!/usr/bin/env python3
"""What a store into a small mailbox costs the server beyond the least a
module's store does, with the mailboxes in the CPU's caches and out of
them: whether the store's own work waits on memory.

    python3 bench/store-hot-cold.py [--module PATH] [--floor PATH]
        [--repeats 2] [--per-user 2]

Each run: Debian's redis-server on a free port with the module and the
floor module (`bench/floor`, `FLOOR.STORE`: open the user's key, append
the stanza, answer with IM.STORE's five reply calls). For each of two
user counts, every user holds an empty mailbox (one device `phone`,
online for pending stores, disconnected for offline ones) or an empty
`floor-box`, and `redis-benchmark -c 32 -P 16 -r <users> -n <users *
per-user>` stores --per-user messages a user on average:

- hot: 1,000 users (every mailbox, a few KiB each, stays in the
  caches), the run repeated over fresh mailboxes until 80,000 stores
  were made, so that the mailboxes are as small as in the cold run;
- cold: 100,000 users, once (most mailboxes' lines are out of the
  caches when a store comes).

Prints `INFO commandstats` µs per call of `FLOOR.STORE`, of `IM.STORE`
pending and offline, of `TYPE` on the users' keys (the server's lookup
alone), and each store's µs beyond the floor, per run and as medians.
"""
import argparse
import os
import statistics
import subprocess

from local_server import RANDOM_ID, chat_stanza, register_users, server

STANZA = chat_stanza(RANDOM_ID)
HERE = os.path.dirname(os.path.abspath(__file__))
# Stores made in the hot run, over as many rounds of fresh mailboxes as it
# takes.
HOT_STORES = 80000


def floor_boxes(r, users):
    """An empty `floor-box` at every user's key."""
    pipe = r.pipeline(transaction=False)
    for i in range(users):
        pipe.execute_command("FLOOR.INIT", f"user:{i:012d}")
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def one_run(opts, users):
    rounds = max(1, HOT_STORES // (users * opts.per_user))
    out = {}
    with server(opts.module, more_modules=[opts.floor]) as (r, port):
        def bench(name, setup, args):
            r.config_resetstat()
            for _ in range(rounds):
                r.flushall()
                setup()
                subprocess.run(["redis-benchmark", "-p", str(port), "-c", "32", "-P", "16",
                                "-n", str(users * opts.per_user), "-r", str(users), "-q", *args],
                               stdout=subprocess.DEVNULL, check=True)
            out[name] = r.info("commandstats")["cmdstat_" + args[0].lower()]["usec_per_call"]

        bench("FLOOR.STORE", lambda: floor_boxes(r, users), ["FLOOR.STORE", "user:__rand_int__", STANZA])
        bench("TYPE", lambda: floor_boxes(r, users), ["TYPE", "user:__rand_int__"])
        bench("IM.STORE pending", lambda: register_users(r, users, offline=False),
              ["IM.STORE", "user:__rand_int__", STANZA, "DEVICES", "1", "phone"])
        bench("IM.STORE offline", lambda: register_users(r, users, offline=True),
              ["IM.STORE", "user:__rand_int__", STANZA])
    for kind in ("pending", "offline"):
        out[f"{kind} beyond the floor"] = round(out[f"IM.STORE {kind}"] - out["FLOOR.STORE"], 2)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module", default=os.path.join(HERE, "..", "target", "release", "libredis_im.so"))
    ap.add_argument("--floor", default=os.path.join(HERE, "floor", "target", "release", "libim_bench_floor.so"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--per-user", type=int, default=2)
    opts = ap.parse_args()
    opts.module, opts.floor = os.path.abspath(opts.module), os.path.abspath(opts.floor)
    runs = {"hot (1,000 users)": [], "cold (100,000 users)": []}
    for _ in range(opts.repeats):
        for label, users in zip(runs, (1000, 100000)):
            runs[label].append(one_run(opts, users))
            print(label, runs[label][-1], flush=True)
    for label, rs in runs.items():
        print(f"{label} medians (µs per call):", {n: round(statistics.median(x[n] for x in rs), 2) for n in rs[0]})


if __name__ == "__main__":
    main()
