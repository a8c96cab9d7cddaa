"""No silent loss behind the module's back, and an operator who knows how
safe the store is (SPEC §8): mailboxes evicted or expired are counted and
logged with what they held, an operator's DEL counted apart; unsafe
settings are warned about at load and on change; IM.DOCTOR reports
durability, eviction risk, the timer's lag, backlogs and losses, as text
and as JSON; scripts/run starts with safe defaults and respects a given
configuration."""

import json
import os
import signal
import subprocess
import time

import pytest
import redis

from conftest import start_scripts_run
from helpers import as_map, message, wait_for, wait_replica_synced

SAFE = {"appendonly": "yes"}


def doctor(r):
    text = r.execute_command("IM.DOCTOR").decode()
    report = json.loads(r.execute_command("IM.DOCTOR", "JSON"))
    return text, report


def areas(report):
    return sorted(f["area"] for f in report["findings"])


def warnings(server, since=0):
    return [l for l in server.log(since).splitlines() if "redis-im:" in l and " — " in l]


def fill_until_gone(r, key, rounds=50, n=5000):
    """Writes other keys until `key` is evicted (LRU is approximate: the
    server samples keys, so it may take a few rounds)."""
    for k in range(rounds):
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            pipe.set(f"cache{k}:{i}", "x" * 200)
        pipe.execute(raise_on_error=False)
        if not r.exists(key):
            return
    raise AssertionError(f"{key} was not evicted")


def test_an_evicted_mailbox_is_counted_and_logged(make_server):
    s = make_server(extra_conf=SAFE)
    r = s.client()
    r.execute_command("IM.CONNECT", "victim", "phone")
    r.execute_command("IM.DISCONNECT", "victim", "phone")
    for i in range(50):
        r.execute_command("IM.STORE", "victim", message(f"m{i}"))
    r.config_set("maxmemory-policy", "allkeys-lru")
    r.config_set("maxmemory", 2 * 1024 * 1024 + r.info("memory")["used_memory"])
    fill_until_gone(r, "victim")
    info = r.info("im")
    assert info["im_lost_evicted_mailboxes"] == 1 and info["im_lost_evicted_messages"] == 50
    assert info["im_deleted_mailboxes"] == 0
    assert "mailbox 'victim' (db 0) was evicted by maxmemory-policy: 50 messages and 50 owed deliveries lost" \
        in s.log()
    _, report = doctor(r)
    assert report["losses"]["lost_evicted_messages"] == 50
    assert "losses" in areas(report) and report["safe"] is False


def test_an_expired_mailbox_is_counted_and_logged_and_a_del_apart(make_server):
    s = make_server(extra_conf=SAFE)
    r = s.client()
    r.execute_command("IM.CONNECT", "temp", "phone", "NODE", "n1")
    for i in range(3):
        r.execute_command("IM.STORE", "temp", message(f"m{i}"))
    r.pexpire("temp", 100)
    wait_for(lambda: not r.exists("temp"), what="the mailbox to expire")
    wait_for(lambda: r.info("im")["im_lost_expired_mailboxes"] == 1, what="the expiry to be counted")
    assert r.info("im")["im_lost_expired_messages"] == 3
    assert "mailbox 'temp' (db 0) was expired (the key had a TTL): 3 messages and 3 owed deliveries lost" \
        in s.log()
    # An operator's DEL, UNLINK and FLUSHDB: counted apart, not logged.
    for k in ("a", "b", "c"):
        r.execute_command("IM.STORE", k, message("x"))
    r.delete("a")
    r.unlink("b")
    r.flushdb()
    info = r.info("im")
    assert (info["im_deleted_mailboxes"], info["im_deleted_messages"]) == (3, 3)
    assert info["im_lost_evicted_mailboxes"] == 0
    assert "mailbox 'a'" not in s.log()
    # Renamed, not lost; emptied by acks, not lost.
    r.execute_command("IM.STORE", "d", message("x"))
    r.rename("d", "e")
    r.execute_command("IM.ACK", "e", "phone", "x")
    assert r.info("im")["im_deleted_mailboxes"] == 3


def test_a_mailbox_overwritten_is_counted_as_deleted(make_server):
    """Review: a mailbox overwritten by a RENAME onto its name or by a
    command of another type (SET, a *STORE destination) left the deleted
    counts as they were, which docs/operations.md says count an overwrite.
    The renamed mailbox itself, and the module's own deletions, are not
    counted."""
    s = make_server(extra_conf=SAFE)
    r = s.client()

    def deleted():
        info = r.info("im")
        return info["im_deleted_mailboxes"], info["im_deleted_messages"]

    def fill(key, n):
        for i in range(n):
            r.execute_command("IM.STORE", key, message(f"{key}{i}"))

    fill("src", 1)
    fill("dst", 2)
    r.rename("src", "dst")
    assert deleted() == (1, 2)
    assert as_map(r.execute_command("IM.OFFLINE.INFO", "dst", "phone"))["count"] == 1
    fill("str", 3)
    r.set("str", "x")
    assert deleted() == (2, 5)
    fill("set", 4)
    r.sadd("members", "m")
    r.sunionstore("set", ["members"])
    fill("multi1", 1)
    fill("multi2", 2)
    fill("multi3", 5)
    pipe = r.pipeline(transaction=True)
    pipe.rename("multi1", "multi2")
    pipe.set("multi3", "y")
    pipe.execute()
    assert deleted() == (5, 16)
    # The module deleting a mailbox it emptied is not counted; a DEL and a
    # flush after the overwrites count once each.
    fill("acked", 1)
    r.execute_command("IM.CONNECT", "acked", "phone")
    r.execute_command("IM.ACK", "acked", "phone", "acked0")
    r.execute_command("IM.FORGET", "acked", "phone")
    assert not r.exists("acked")
    fill("last", 1)
    r.delete("last")
    assert deleted() == (6, 17)
    _, report = doctor(r)
    assert report["losses"]["deleted_mailboxes"] == 6
    r.flushall()
    assert deleted() == (8, 19)  # dst and multi2, a message each
    alive = r.execute_command("IM.STORE", "after", message("z"))
    assert alive is not None


def test_a_loss_is_counted_once_where_it_happened(make_server):
    """Review: a restart counted every DEL and flush of the AOF again (and
    the DEL an eviction or an expiry wrote there, as an operator's
    deletion), and a replica counted its primary's expiries as deletions.
    Losses are counted on the primary when they happen: not again while the
    server loads, and not on a replica, whose losses are its primary's."""
    primary = make_server(extra_conf=SAFE, name="primary")
    replica = make_server(extra_conf=SAFE, replicaof=primary, name="replica")
    wait_replica_synced(primary, replica)
    r, rc = primary.client(), replica.client()

    def losses(c):
        info = c.info("im")
        return {k: info[f"im_{k}"] for k in ("deleted_mailboxes", "deleted_messages",
                                             "lost_expired_mailboxes", "lost_expired_messages")}

    for i in range(2):
        r.execute_command("IM.STORE", "gone", message(f"g{i}"))
    r.delete("gone")
    r.execute_command("IM.STORE", "temp", message("t"))
    r.pexpire("temp", 50)
    wait_for(lambda: losses(r)["lost_expired_mailboxes"] == 1, what="the expiry to be counted")
    r.execute_command("IM.STORE", "flushed", message("f"))
    r.flushdb()
    counted = {"deleted_mailboxes": 2, "deleted_messages": 3,
               "lost_expired_mailboxes": 1, "lost_expired_messages": 1}
    assert losses(r) == counted
    wait_replica_synced(primary, replica)
    assert set(losses(rc).values()) == {0}, losses(rc)
    primary.restart()
    assert set(losses(primary.client()).values()) == {0}
    replica.restart()
    assert set(losses(replica.client()).values()) == {0}


UNSAFE = {
    "no-persistence": ({"appendonly": "no", "save": ""}, "durability", "nothing persists"),
    "rdb-only": ({"appendonly": "no", "save": "3600 1"}, "durability", "only RDB snapshots"),
    "allkeys": ({"appendonly": "yes", "maxmemory-policy": "allkeys-lru"}, "eviction", "allkeys-lru"),
}


@pytest.mark.parametrize("case", UNSAFE)
def test_unsafe_settings_are_warned_at_load_and_found_by_the_doctor(make_server, case):
    conf, area, words = UNSAFE[case]
    s = make_server(extra_conf=conf)
    lines = warnings(s)
    assert any(words in l for l in lines), lines
    text, report = doctor(s.client())
    assert area in areas(report)
    assert words in text and "To change:" in text


def test_a_safe_configuration_gives_no_warning_and_no_risk(make_server):
    s = make_server(extra_conf=SAFE)
    r = s.client()
    assert warnings(s) == []
    text, report = doctor(r)
    assert report["findings"] == [] and report["safe"] is True
    assert text.startswith("redis-im: no risk found")
    assert report["durability"]["appendonly"] == "yes"


def test_warnings_follow_config_set(make_server):
    s = make_server(extra_conf=SAFE)
    r = s.client()
    mark = s.log_size()
    r.config_set("maxmemory-policy", "allkeys-lfu")
    wait_for(lambda: any("allkeys-lfu" in l for l in warnings(s, mark)), what="the eviction warning")
    mark = s.log_size()
    r.config_set("appendonly", "no")
    r.config_set("save", "")
    wait_for(lambda: any("nothing persists" in l for l in warnings(s, mark)), what="the durability warning")
    # volatile-* only once a mailbox carries a TTL.
    r.config_set("maxmemory-policy", "volatile-lru")
    mark = s.log_size()
    r.execute_command("IM.STORE", "ttl", message("x"))
    assert "eviction" not in areas(doctor(r)[1])
    r.expire("ttl", 1000)
    wait_for(lambda: any("volatile-lru" in l for l in warnings(s, mark)), what="the volatile warning")
    assert "eviction" in areas(doctor(r)[1])


def test_offline_types_without_chat_or_normal_is_a_risk(make_server):
    """SPEC §3: chat and normal messages are kept offline; a list without
    them drops such messages to users with no device online."""
    s = make_server(extra_conf=SAFE, module_args={"offline-types": "chat headline"})
    lines = warnings(s)
    assert any("offline-types leaves out normal:" in l for l in lines), lines
    r = s.client()
    text, report = doctor(r)
    assert areas(report) == ["offline"] and report["safe"] is False
    assert report["findings"][0]["severity"] == "risk"
    assert "leaves out normal:" in text and "To change:" in text
    mark = s.log_size()
    r.config_set("im.offline-types", "")
    wait_for(lambda: any("leaves out chat and normal:" in l for l in warnings(s, mark)),
             what="the offline warning")
    r.config_set("im.offline-types", "normal,chat groupchat")
    text, report = doctor(r)
    assert report["findings"] == [] and report["safe"] is True


def test_replicas_without_min_replicas_to_write_are_warned(make_server):
    primary = make_server(extra_conf=SAFE)
    mark = primary.log_size()
    replica = make_server(extra_conf=SAFE, replicaof=primary)
    wait_replica_synced(primary, replica)
    wait_for(lambda: any("min-replicas-to-write 0" in l for l in warnings(primary, mark)),
             what="the replication warning")
    r = primary.client()
    assert "replication" in areas(doctor(r)[1])
    r.config_set("min-replicas-to-write", 1)
    assert "replication" not in areas(doctor(r)[1])
    # A replica's timer waits for its promotion: the text says so, as the
    # JSON's role does.
    text, report = doctor(replica.client())
    assert report["timer"]["role"] == "replica"
    assert "Timer: on once this replica is promoted," in text, text
    assert "Timer: on," in doctor(r)[0]


def test_the_doctor_sees_a_stalled_timer_and_an_old_backlog(make_server):
    s = make_server(module_args={"sweep-interval": 0, "ack-timeout": 50, "retention": 0},
                    extra_conf=SAFE)
    r = s.client()
    r.execute_command("IM.CONNECT", "u", "phone")
    r.execute_command("IM.STORE", "u", message("m1"))
    time.sleep(0.2)
    text, report = doctor(r)
    assert "timer" in areas(report) and "sweep-interval 0" in text
    assert report["timer"]["lag_ms"] >= 100 and report["timer"]["enabled"] is False
    assert report["backlog"]["pending"] == 1
    r.execute_command("IM.SWEEP")
    assert "timer" not in areas(doctor(r)[1])
    # An offline message 30 days old with retention off.
    month = int(time.time() * 1000) - 30 * 24 * 3600 * 1000
    r.execute_command("IM.IMPORT", "u", month, "old", message("old"), "SEQ", 1)
    text, report = doctor(r)
    assert "backlog" in areas(report) and "30 days old" in text
    assert report["backlog"]["oldest_offline_ms"] >= 30 * 24 * 3600 * 1000
    assert report["backlog"]["complete"] is True


def test_doctor_arguments(server):
    r = server.raw()
    assert r.call("IM.DOCTOR", "BOGUS").args[0].startswith("ERR unknown option")


# ------------------------------------------------------------ scripts/run

def run_script(tmp_path, make_args):
    """scripts/run on a free port: (process, client)."""
    proc, c, _ = start_scripts_run(make_args, tmp_path / "run.log")
    return proc, c


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def test_scripts_run_starts_safe_and_respects_a_config_file(tmp_path):
    proc, c = run_script(tmp_path, lambda port: ["--port", str(port), "--", "ack-timeout", "30000"])
    try:
        assert c.config_get("appendonly") == {"appendonly": "yes"}
        assert c.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert c.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert c.config_get("im.ack-timeout") == {"im.ack-timeout": "30000"}
        assert json.loads(c.execute_command("IM.DOCTOR", "JSON"))["safe"] is True
    finally:
        stop(proc)
    conf = tmp_path / "my.conf"

    def with_conf(port):
        conf.write_text(f"port {port}\ndir {tmp_path}\nappendonly no\nsave \"\"\nmaxmemory-policy allkeys-lru\n")
        return [str(conf)]

    proc, c = run_script(tmp_path, with_conf)
    try:
        assert c.config_get("appendonly") == {"appendonly": "no"}
        assert c.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        report = json.loads(c.execute_command("IM.DOCTOR", "JSON"))
        assert {"durability", "eviction"} <= {f["area"] for f in report["findings"]}
    finally:
        stop(proc)
