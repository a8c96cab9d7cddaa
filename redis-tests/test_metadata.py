"""What the server tells a client about the module's commands, on every
server: COMMAND INFO (arity, flags, key specs, ACL categories, tips),
COMMAND DOCS (summary, since, complexity, group, arguments), COMMAND
GETKEYS, the ACL recipe of docs/operations.md, the version in MODULE LIST,
INFO im and the docs against Cargo.toml, the commands docs/commands.md
describes against COMMAND LIST, and scripts/run's port.

The expected commands are listed here as well as read from the server: a
command added without its description here (and in docs/commands.md)
fails."""

import os
import re
import shlex
import signal
import subprocess
import tomllib

import pytest
import redis

from conftest import REPO, start_scripts_run
from helpers import RawError, message

# Command flags as COMMAND INFO shows them.
WRITE, READ = ["write", "module"], ["readonly", "module"]
WRITE_DENYOOM = ["write", "denyoom", "module"]
PER_NODE = ["request_policy:all_shards", "response_policy:special", "nondeterministic_output"]
PER_NODE_LIST = ["request_policy:all_shards", "nondeterministic_output"]
ADMIN = ["@admin", "@dangerous"]

# name: arity, flags, key spec flags (None: keyless), arguments as
# render() writes them, ACL categories beyond @im/@write/@read/@slow, tips.
COMMANDS = {
    "im.connect": (-3, WRITE_DENYOOM, ["RW", "access", "update"],
                   "user:key device:string [NODE node:string]", [], []),
    "im.disconnect": (3, WRITE, ["RW", "update"], "user:key device:string", [], []),
    "im.devices": (2, READ, ["RO", "access"], "user:key", [], []),
    "im.forget": (3, WRITE, ["RW", "delete"], "user:key device:string", [], []),
    "im.store": (-3, WRITE_DENYOOM, ["RW", "insert"],
                 "user:key stanza:string [ID id:string] "
                 "[DEVICES numdevices:integer device:string...] [FORCE]", [], []),
    "im.ack": (-4, WRITE, ["RW", "update"],
               "user:key device:string (id:string... | UPTO seq:integer)", [], []),
    "im.offline.info": (-3, READ, ["RO", "access"],
                        "user:key device:string [IDS [LIMIT limit:integer]]", [], []),
    "im.offline.page": (-3, READ, ["RO", "access"],
                        "user:key device:string [AFTER seq:integer] [COUNT count:integer] "
                        "[DELAY from:string]", [], []),
    "im.info": (2, READ, ["RO", "access"], "user:key", [], []),
    "im.sweep": (-1, WRITE, None, "[LIMIT mailboxes:integer]", ADMIN, PER_NODE),
    "im.archive.pull": (-1, WRITE, None, "[COUNT count:integer] [LEASE ms:integer]",
                        ADMIN, PER_NODE_LIST),
    "im.archive.ack": (-3, WRITE, ["RW", "delete"], "user:key seq:integer...", ADMIN, []),
    "im.import": (-5, WRITE_DENYOOM, ["RW", "insert"],
                  "user:key ts:integer id:string stanza:string [SEQ seq:integer]", ADMIN, []),
    "im.doctor": (-1, READ, None, "[JSON]", ["@admin"], PER_NODE),
    "im.apply": (-3, WRITE, ["RW", "update"], "user:key effects:string [stanza:string]",
                 ADMIN, []),
    "im.load": (4, WRITE, ["OW", "update"], "user:key (HEAD | MSGS) blob:string", ADMIN, []),
}
# Container commands: each subcommand is a dotted command spelled with a
# space, its key one place further.
# `help` lists the others (the server's own containers have one, and its
# error for an unknown subcommand names it).
CONTAINERS = {
    "im.offline": ["info", "page", "help"],
    "im.archive": ["pull", "ack", "help"],
}
# A container's HELP: arity, flags, no key, no argument, no more ACL
# categories, no tips.
HELP = (2, ["readonly", "loading", "stale", "module"], None, "", [], [])
INTERNAL = ["im.apply", "im.load"]
# A call of each keyed command that COMMAND GETKEYS accepts.
SAMPLE_ARGS = {
    "im.connect": ["phone"], "im.disconnect": ["phone"], "im.devices": [],
    "im.forget": ["phone"], "im.store": ["<message/>"], "im.ack": ["phone", "m1"],
    "im.offline.info": ["phone"], "im.offline.page": ["phone"], "im.info": [],
    "im.archive.ack": ["1"], "im.import": ["1", "m1", "<message/>"],
    "im.apply": ["x"], "im.load": ["HEAD", "x"],
}
# Keyless commands, with an argument (Redis 7.0's COMMAND GETKEYS wants one).
KEYLESS_ARGS = {"im.sweep": ["LIMIT", "1"], "im.archive.pull": ["COUNT", "1"], "im.doctor": ["JSON"]}


def sub_entries():
    """(container|sub, dotted command) pairs."""
    return [(f"{c}|{s}", f"{c}.{s}") for c, subs in CONTAINERS.items() for s in subs]


def expected(name):
    """The expectation of a command or subcommand (`im.offline|page`)."""
    if "|" not in name:
        return COMMANDS[name]
    if name.endswith("|help"):
        return HELP
    dotted = name.replace("|", ".")
    arity, flags, key, args, acl, tips = COMMANDS[dotted]
    return (arity - 1 if arity < 0 else arity + 1), flags, key, args, acl, tips


def text(v):
    return v.decode() if isinstance(v, bytes) else v


def texts(vs):
    return [text(v) for v in vs]


def has_categories(flavor):
    """Redis 7.0 has neither RedisModule_SetCommandACLCategories nor
    RedisModule_AddACLCategory; Redis 8.2 and Valkey 8.1 and 9.1 have both."""
    return flavor != "redis"


def render(args):
    """COMMAND DOCS arguments as a one-line syntax with types, e.g.
    `user:key [ID id:string] (id:string... | UPTO seq:integer)`."""
    out = []
    for a in args:
        a = {text(k): v for k, v in a.items()}
        kind, flags = text(a["type"]), texts(a.get("flags", []))
        token = text(a["token"]) if "token" in a else None
        if kind == "pure-token":
            s = token
        elif kind == "oneof":
            s = "(" + " | ".join(render([x]) for x in a["arguments"]) + ")"
        elif kind == "block":
            s = " ".join(([token] if token else []) + [render(a["arguments"])])
        else:
            s = f"{text(a['name'])}:{kind}"
            if token:
                s = f"{token} {s}"
        if "multiple" in flags:
            s += "..."
        if "optional" in flags:
            s = f"[{s}]"
        out.append(s)
    return " ".join(out)


@pytest.fixture
def raw3(server):
    """A RESP3 raw client: COMMAND DOCS answers maps."""
    return server.raw(protocol=3)


def module_commands(raw3):
    return sorted(texts(raw3.call("COMMAND", "LIST", "FILTERBY", "MODULE", "im")))


def test_the_server_lists_exactly_the_described_commands(raw3):
    names = set(COMMANDS) | set(CONTAINERS) | {s for s, _ in sub_entries()}
    assert set(module_commands(raw3)) == names


def command_info(raw3, name):
    """COMMAND INFO of a command or subcommand, as a dict."""
    parent, _, sub = name.partition("|")
    [info] = raw3.call("COMMAND", "INFO", parent)
    if sub:
        [info] = [s for s in info[9] if text(s[0]) == name]
    keys = ["name", "arity", "flags", "first", "last", "step", "acl", "tips", "key_specs", "subcommands"]
    return dict(zip(keys, info))


@pytest.mark.parametrize("name", list(COMMANDS) + [s for s, _ in sub_entries()])
def test_command_info(server, flavor, raw3, name):
    arity, flags, key, _, acl, tips = expected(name)
    info = command_info(raw3, name)
    assert info["arity"] == arity
    assert sorted(texts(info["flags"])) == sorted(flags)
    assert texts(info["tips"]) == tips
    pos = 2 if "|" in name else 1
    if key is None:
        assert (info["first"], info["last"], info["step"]) == (0, 0, 0)
        assert info["key_specs"] == []
    else:
        assert (info["first"], info["last"], info["step"]) == (pos, pos, 1)
        [spec] = info["key_specs"]
        spec = {text(k): v for k, v in spec.items()}
        assert sorted(texts(spec["flags"])) == sorted(key)
        assert spec["begin_search"] == {b"type": b"index", b"spec": {b"index": pos}}
    if has_categories(flavor):
        rw = "@write" if "write" in flags else "@read"
        assert sorted(texts(info["acl"])) == sorted(["@im", rw, "@slow"] + acl)
    else:
        assert info["acl"] == []


@pytest.mark.parametrize("name", list(COMMANDS) + [s for s, _ in sub_entries()])
def test_command_docs(raw3, name):
    _, _, _, args, _, _ = expected(name)
    parent, _, sub = name.partition("|")
    docs = raw3.call("COMMAND", "DOCS", parent)[parent.encode()]
    if sub:
        docs = docs[b"subcommands"][name.encode()]
    assert docs[b"group"] == b"module"
    assert docs[b"module"] == b"im"
    assert docs[b"since"] == b"0.1.0"
    assert docs[b"complexity"].startswith(b"O(")
    assert len(docs[b"summary"]) > 20
    assert render(docs[b"arguments"]) == args
    if parent in INTERNAL:
        assert docs[b"summary"].startswith(b"Internal:")
        assert b"Refused to clients" in docs[b"summary"]
    else:
        assert b"Internal" not in docs[b"summary"]


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_containers_are_described(server, flavor, raw3, container):
    docs = raw3.call("COMMAND", "DOCS", container)[container.encode()]
    assert docs[b"summary"].startswith(b"Container of")
    assert sorted(docs[b"subcommands"]) == sorted(f"{container}|{s}".encode() for s in CONTAINERS[container])
    info = command_info(raw3, container)
    assert texts(info["acl"]) == (["@im"] if has_categories(flavor) else [])


def container_syntax(container):
    """The syntax lines of docs/commands.md's section of `container`
    (`IM.OFFLINE PAGE user device [AFTER seq] ...`)."""
    md = (REPO / "docs" / "commands.md").read_text()
    section = md.split(f"\n## {container.upper()}\n", 1)[1]
    block = section.split("```", 2)[1]
    return [ln for ln in block.strip().splitlines()]


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_containers_answer_help(server, container):
    """HELP lists each subcommand with the syntax docs/commands.md gives
    it and its summary, then HELP; the server's error for an unknown
    subcommand points there, and the pointer works."""
    c = server.raw()
    lines = texts(c.call(container.upper(), "HELP"))
    assert lines == texts(c.call(container, "help"))
    assert lines[0] == f"{container.upper()} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    entries = lines[1:]
    assert all(ln.startswith("    ") for ln in entries[1::2]), lines
    syntax = [f"{container.upper()} {ln}" for ln in entries[0::2]]
    assert syntax == container_syntax(container)
    assert [s.split()[1].lower() for s in syntax] == CONTAINERS[container]
    docs = raw3_docs(server, container)
    for sub, summary in zip(CONTAINERS[container], entries[1::2]):
        assert summary.strip() == text(docs[f"{container}|{sub}".encode()][b"summary"]) \
            or (sub == "help" and summary.strip() == "Print this help.")
    err = c.call(container.upper(), "NOSUCH")
    assert isinstance(err, RawError), err
    hint = re.search(r"Try (\S+ \S+)\.", str(err)).group(1)
    assert texts(c.call(*hint.split())) == lines
    assert isinstance(c.call(container.upper(), "HELP", "extra"), RawError)


def raw3_docs(server, container):
    return server.raw(protocol=3).call("COMMAND", "DOCS", container)[container.encode()][b"subcommands"]


def test_store_lists_its_tokens(raw3):
    """The issue's own example: COMMAND DOCS IM.STORE names ID, DEVICES and FORCE."""
    docs = raw3.call("COMMAND", "DOCS", "IM.STORE")[b"im.store"]
    tokens = [a.get(b"token") for a in docs[b"arguments"]]
    assert tokens == [None, None, b"ID", b"DEVICES", b"FORCE"]


@pytest.mark.parametrize("name", list(COMMANDS) + [s for s, _ in sub_entries()])
def test_getkeys(raw3, name):
    dotted = name.replace("|", ".")
    words = name.split("|")
    if expected(name)[2] is None:
        reply = raw3.call("COMMAND", "GETKEYS", *words, *KEYLESS_ARGS.get(dotted, []))
        assert isinstance(reply, RawError) and "no key arguments" in str(reply), reply
        return
    assert raw3.call("COMMAND", "GETKEYS", *words, "alice@example.com", *SAMPLE_ARGS[dotted]) \
        == [b"alice@example.com"]


def test_redis_cli_help_answers(server):
    """redis-cli builds HELP and its hints from COMMAND DOCS."""
    out = subprocess.run(["redis-cli", "-p", str(server.port), "HELP", "IM.STORE"],
                         capture_output=True, text=True, timeout=30).stdout
    assert "[ID id] [DEVICES numdevices device [device ...]] [FORCE]" in out, out
    assert "summary: Stores a stanza" in re.sub(r"\x1b\[[0-9;]*m", "", out), out


# ------------------------------------------------------------------ ACL

def recipe():
    """The ACL SETUSER lines of docs/operations.md's recipe: {user: [words]}
    for the category form and the command form."""
    text_ = (REPO / "docs" / "operations.md").read_text()
    section = text_.split("## ACL", 1)[1].split("\n## ", 1)[0]
    lines = [ln.strip() for ln in section.splitlines() if ln.strip().startswith("ACL SETUSER")]
    return {shlex.split(ln)[2]: shlex.split(ln)[2:] for ln in lines}


def as_user(server, user, password):
    c = server.raw()
    assert c.call("AUTH", user, password) == b"OK"
    return c


def denied(reply):
    return isinstance(reply, RawError) and str(reply).startswith("NOPERM")


def check_tenant_role(server, c):
    """A tenant's IM server: IM.* on its own keys, nothing else."""
    mine, theirs = "im:tenant1:alice@example.com", "im:tenant2:bob@example.com"
    assert not isinstance(c.call("IM.CONNECT", mine, "phone"), RawError)
    assert not isinstance(c.call("IM.STORE", mine, message("m1")), RawError)
    assert not isinstance(c.call("IM.OFFLINE.PAGE", mine, "laptop"), RawError)
    assert not isinstance(c.call("IM.OFFLINE", "PAGE", mine, "laptop"), RawError)
    # A node is named only where its events may go: the tenant's own
    # channels (the module publishes a device's resends there).
    assert not isinstance(c.call("IM.CONNECT", mine, "tablet", "NODE", "tenant1-n1"), RawError)
    reply = c.call("IM.CONNECT", mine, "tablet", "NODE", "tenant2-n1")
    assert isinstance(reply, RawError) and str(reply).startswith("NOPERM") \
        and "im:events:tenant2-n1" in str(reply), reply
    assert b"tenant2-n1" not in b" ".join(
        x for d in c.call("IM.DEVICES", mine) for x in d if isinstance(x, bytes))
    assert c.call("IM.ACK", mine, "phone", "m1") == 1
    assert not isinstance(c.call("IM.INFO", mine), RawError)
    for args in (["IM.STORE", theirs, message("m2")], ["IM.INFO", theirs],
                 ["IM.OFFLINE", "INFO", theirs, "phone"], ["IM.SWEEP"], ["IM.DOCTOR"],
                 ["IM.ARCHIVE.PULL"], ["IM.ARCHIVE", "PULL"], ["IM.ARCHIVE.ACK", mine, "1"],
                 ["IM.IMPORT", mine, "1", "m9", message("m9")], ["IM.APPLY", mine, "x"],
                 ["IM.LOAD", mine, "HEAD", "x"], ["GET", mine], ["DEL", mine],
                 ["CONFIG", "SET", "im.ack-timeout", "1"]):
        assert denied(c.call(*args)), args


def test_acl_recipe_with_commands(server):
    """The recipe that names the commands works on every server."""
    users = recipe()
    assert "im-tenant1" in users and "im-archiver" in users
    admin = server.raw()
    assert admin.call("ACL", "SETUSER", *users["im-tenant1"]) == b"OK"
    check_tenant_role(server, as_user(server, "im-tenant1", "tenant1-secret"))
    assert admin.call("ACL", "SETUSER", *users["im-archiver"]) == b"OK"
    arch = as_user(server, "im-archiver", "archiver-secret")
    assert not isinstance(arch.call("IM.ARCHIVE", "PULL"), RawError)
    assert not isinstance(arch.call("IM.ARCHIVE.PULL", "COUNT", "5"), RawError)
    assert arch.call("IM.ARCHIVE.ACK", "im:tenant1:alice@example.com", "1") == 0
    assert denied(arch.call("IM.STORE", "im:tenant1:alice@example.com", message("m3")))
    assert denied(arch.call("IM.SWEEP"))


def test_acl_recipe_with_categories(server, flavor):
    """The category recipe (+@im -@admin -@dangerous), where the server has
    module ACL categories; Redis 7.0 refuses the unknown category."""
    users = recipe()
    admin = server.raw()
    reply = admin.call("ACL", "SETUSER", *users["im-tenant1-cat"])
    if not has_categories(flavor):
        assert isinstance(reply, RawError) and "im" in str(reply), reply
        return
    assert reply == b"OK"
    check_tenant_role(server, as_user(server, "im-tenant1-cat", "tenant1-secret"))
    assert admin.call("ACL", "SETUSER", *users["im-readonly"]) == b"OK"
    ro = as_user(server, "im-readonly", "readonly-secret")
    mine = "im:tenant1:alice@example.com"
    assert not isinstance(ro.call("IM.INFO", mine), RawError)
    assert not isinstance(ro.call("IM.OFFLINE", "INFO", mine, "phone"), RawError)
    assert denied(ro.call("IM.STORE", mine, message("m4")))
    assert denied(ro.call("IM.ACK", mine, "phone", "m1"))


def test_write_category_denies_store(server, flavor):
    """SPEC §8: `-@write` denies IM.STORE where the server has categories."""
    if not has_categories(flavor):
        pytest.skip("Redis 7.0: module commands carry no ACL categories")
    admin = server.raw()
    assert admin.call("ACL", "SETUSER", "nowrite", "on", ">pw", "~*", "+@all", "-@write") == b"OK"
    c = as_user(server, "nowrite", "pw")
    assert denied(c.call("IM.STORE", "alice", message("m1")))
    assert not isinstance(c.call("IM.INFO", "alice"), RawError)


# ------------------------------------------------------------- versions

def cargo_version():
    return tomllib.loads((REPO / "Cargo.toml").read_text())["package"]["version"]


def version_number(v):
    major, minor, patch = (int(x) for x in v.split("."))
    return major * 10000 + minor * 100 + patch


def test_one_version(server):
    """MODULE LIST, INFO im and the docs say Cargo.toml's version."""
    v = cargo_version()
    r = server.raw()
    [entry] = [m for m in r.call("MODULE", "LIST") if m[1] == b"im"]
    assert dict(zip(entry[::2], entry[1::2]))[b"ver"] == version_number(v)
    info = r.call("INFO", "im").decode()
    assert f"im_version:{v}\r\n" in info
    ops = (REPO / "docs" / "operations.md").read_text()
    assert f"`im_version:{v}`" in ops and f"`ver` {version_number(v)}" in ops


# ------------------------------------------------ docs/commands.md, both ways

def test_commands_md_describes_every_command(raw3):
    """Every command and subcommand the server lists has a heading in
    docs/commands.md (`## IM.STORE`, `### IM.OFFLINE PAGE`), and every such
    heading is a command the server lists."""
    md = (REPO / "docs" / "commands.md").read_text()
    headings = {m.group(1).lower().replace(" ", "|")
                for m in re.finditer(r"^#{2,3} (IM\.[A-Z.]+(?: [A-Z]+)?)\s*$", md, re.M)}
    assert headings == set(module_commands(raw3))


# ------------------------------------------------------------ scripts/run

def run_script(tmp_path, make_args):
    """scripts/run on a free port, its output in run.log: (process, client, port)."""
    return start_scripts_run(make_args, tmp_path / "run.log")


def stop(proc, tmp_path):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    text_ = (tmp_path / "run.log").read_text(errors="replace")
    assert "panicked" not in text_ and "crashed by signal" not in text_, text_[-2000:]
    return text_


def test_scripts_run_port(tmp_path):
    """`scripts/run --port p --dir d` serves on p, with the module (Debian's
    redis-server, the release build)."""
    proc, c, _ = run_script(tmp_path, lambda port: ["--port", str(port), "--dir", str(tmp_path / "data"),
                                                    "--", "ack-timeout", "30000"])
    try:
        assert c.config_get("im.ack-timeout") == {"im.ack-timeout": "30000"}
        assert c.info("im")["im_version"] == cargo_version()
    finally:
        stop(proc, tmp_path)


def test_scripts_run_config_port(tmp_path):
    """A configuration file's own `port` is the one served."""
    conf = tmp_path / "redis.conf"

    def with_conf(port):
        conf.write_text(f"port {port}\ndir {tmp_path}\nappendonly no\nsave \"\"\n")
        return [str(conf)]

    proc, c, port = run_script(tmp_path, with_conf)
    try:
        assert int(c.config_get("port")["port"]) == port
        assert c.info("im")["im_version"] == cargo_version()
    finally:
        stop(proc, tmp_path)
