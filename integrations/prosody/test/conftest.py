import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

harness.quiet_slixmpp()


def pytest_configure(config):
    missing = [p for p in ("prosody", "prosodyctl", "redis-server", "lua5.4") if not shutil.which(p)]
    if missing:
        raise pytest.UsageError(f"missing {', '.join(missing)}: run scripts/test-prosody (it installs them)")
    if not Path(harness.module_path()).exists():
        raise pytest.UsageError(f"no module at {harness.module_path()}: cargo build --release first")


def check_logs(stack):
    """No Lua error in Prosody's log, no panic in Redis' log."""
    allowed = ["certmanager"] + stack.allowed_errors
    errors = [l for l in stack.prosody.errors() if not any(a in l for a in allowed)]
    assert not errors, "errors in Prosody's log:\n" + "\n".join(errors)
    if stack.redis:
        log = stack.redis.log()
        assert "panicked" not in log and "ASSERTION" not in log, log[-3000:]


def serve(**kw):
    """A generator fixture's body: yields harness.Stack(**kw), started with
    no users, and closes it after."""
    s = harness.Stack(**kw).start(users=())
    yield s
    s.close(keep=bool(os.environ.get("KEEP_TMP")))


@pytest.fixture(scope="module")
def shared_stack():
    """One Redis and one Prosody for the tests that need no settings of
    their own; each test uses its own users (new_users). A test module may
    override it with a stack of its own: `stack` then checks that one."""
    yield from serve(probe=True)


@pytest.fixture
def stack(shared_stack):
    yield shared_stack
    check_logs(shared_stack)


@pytest.fixture
def new_users(shared_stack):
    """new_users("alice", "bob") registers fresh users with these prefixes
    and returns their names."""
    def make(*prefixes, stack=None):
        return harness.fresh_users(stack or shared_stack, *prefixes)
    return make


@pytest.fixture
def own_stack(request):
    """A stack of the test's own: own_stack(settings=..., **kw)."""
    made = []

    def make(users=("alice", "bob", "carol"), **kw):
        s = harness.Stack(**kw).start(users=users)
        made.append(s)
        return s
    yield make
    for s in made:
        try:
            check_logs(s)
        finally:
            s.close(keep=bool(os.environ.get("KEEP_TMP")))
