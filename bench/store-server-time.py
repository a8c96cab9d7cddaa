#!/usr/bin/env python3
"""The server's own time per IM.STORE of two builds of the module, side by
side (INFO commandstats usec_per_call), beside a two-field HSET of the same
stanza, alternating builds so that a noisy machine affects both alike.

    python3 bench/store-server-time.py OLD.so NEW.so [--repeats 3]
        [--users 1000] [--no-push] [--no-deadlines]

Each run: Debian's redis-server on a free port, 1,000 users (one device
`phone`; --users to change), `redis-benchmark -c 32 -P 16 -n 200000 -r
<users>` of HSET, of TYPE on the users' keys (the server finding a
user's key and nothing more, which every store pays), of IM.STORE
pending on the device (`DEVICES 1 phone`, the device online) and of
IM.STORE with the device offline. A stanza's id is three random
numbers, so that ids seldom repeat in a mailbox (a repeated id is a
duplicate, which stores nothing). Beside each command's µs, "faults" is
the server's minor page faults per call (a fresh page touched the first
time), counted over the whole run: most fall within the commands (the
heap growing), some outside them (query and reply buffers). --no-push
sets push-events no on both builds (where the setting exists);
--no-deadlines sets retention, device-idle and mailbox-idle to 0.
Prints each run and the medians (µs).
"""
import argparse
import os
import statistics
import subprocess

from local_server import RANDOM_ID, chat_stanza, register_users, server, set_if_known

STANZA = chat_stanza(RANDOM_ID)
# Calls per command and run.
CALLS = 200000


def minor_faults(pid):
    """The server's minor page faults so far (/proc/<pid>/stat, field 10):
    each first touch of a fresh page of the heap is one."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def one_run(module, opts):
    with server(module) as (r, port):
        if opts.no_push:
            set_if_known(r, "im.push-events", "no")
        if opts.no_deadlines:
            for name in ("im.retention", "im.device-idle", "im.mailbox-idle"):
                set_if_known(r, name, 0)
        out = {}

        pid = r.info("server")["process_id"]

        def bench(name, args):
            r.config_resetstat()
            faults = minor_faults(pid)
            subprocess.run(["redis-benchmark", "-p", str(port), "-c", "32", "-P", "16", "-n", str(CALLS),
                            "-r", str(opts.users), "-q", *args], stdout=subprocess.DEVNULL, check=True)
            out[name] = r.info("commandstats")["cmdstat_" + args[0].lower()]["usec_per_call"]
            out[name + " faults"] = round((minor_faults(pid) - faults) / CALLS, 3)

        bench("HSET", ["HSET", "OGM:__rand_int__", "STANZA", STANZA, "CREATIONDATE", "1732690028123"])
        r.flushall()
        register_users(r, opts.users, offline=False)
        bench("TYPE", ["TYPE", "user:__rand_int__"])
        bench("IM.STORE pending", ["IM.STORE", "user:__rand_int__", STANZA, "DEVICES", "1", "phone"])
        r.flushall()
        register_users(r, opts.users, offline=True)
        bench("IM.STORE offline", ["IM.STORE", "user:__rand_int__", STANZA])
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--no-push", action="store_true")
    ap.add_argument("--no-deadlines", action="store_true")
    opts = ap.parse_args()
    builds = {"old": os.path.abspath(opts.old), "new": os.path.abspath(opts.new)}
    runs = {k: [] for k in builds}
    for _ in range(opts.repeats):
        for k, module in builds.items():
            runs[k].append(one_run(module, opts))
            print(k, runs[k][-1], flush=True)
    for k in builds:
        print(f"{k} medians (µs per call; faults per call):",
              {n: round(statistics.median(x[n] for x in runs[k]), 3 if n.endswith("faults") else 2)
               for n in runs[k][0]})


if __name__ == "__main__":
    main()
