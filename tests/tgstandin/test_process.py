"""Process mode (`python -m tgstandin`) driven through RemoteStandIn."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import telegram.error

from tests.tgstandin.support import make_bot, run
from tgstandin.control import OPERATIONS
from tgstandin.remote import RemoteStandIn
from tgstandin.world import Call


@pytest.fixture
def remote() -> Iterator[RemoteStandIn]:
    command = [sys.executable, "-m", "tgstandin", "--seed", "7"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("STANDIN "), line
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        with RemoteStandIn(fields["control_url"]) as client:
            assert client.base_url == fields["base_url"]
            yield client
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_remote_stand_in_smoke(remote: RemoteStandIn) -> None:
    users = remote.add_users(5, blocked=1, deactivated=1, start_id=7000)
    assert users == [7000, 7001, 7002, 7003, 7004]
    admin = remote.add_user(1, first_name="Ada")
    post = remote.send_text(admin, "Big news")

    async def broadcast() -> None:
        async with make_bot(remote) as bot:
            for user in users:
                # Blocked and deactivated people answer 403; a broadcast moves on.
                with contextlib.suppress(telegram.error.Forbidden):
                    await bot.copy_message(user, admin, post["message_id"])

    run(broadcast())
    assert remote.deliveries(7002) == 1
    assert remote.count("copyMessage", 403) == 2
    copy = remote.wait_for_message(7002, lambda m: m["text"] == "Big news", timeout=5)
    assert copy["copied_from"] == [admin, post["message_id"]]
    remote.wait_for(lambda: remote.count("copyMessage", 200) == 3, timeout=5)
    calls = remote.calls("copyMessage")
    assert all(isinstance(c, Call) for c in calls)
    assert [c.status for c in calls].count(200) == 3 and calls[0].params["from_chat_id"] == admin
    with pytest.raises(ValueError, match="no user 99"):
        remote.send_text(99, "who am I")
    with pytest.raises(AssertionError, match="no bot message in chat 7003"):
        remote.wait_for_message(7003, lambda m: m["text"] == "never", timeout=0.2)


def test_operations_travel_with_positional_keyword_and_default_arguments(
    remote: RemoteStandIn,
) -> None:
    member = remote.add_user(None, "Ann")  # positional, the rest left to the defaults
    group = remote.add_group("Team")
    supergroup = remote.migrate_to_supergroup(group, by_user_id=member)
    assert isinstance(supergroup, int) and supergroup != group
    remote.inject_faults(kind="500", next_calls=1, methods={"getMe"})  # a set travels as a list
    get_me = f"{remote.base_url}{remote.token}/getMe"
    assert [httpx.post(get_me, trust_env=False).status_code for _ in range(2)] == [500, 200]
    assert remote.pending_updates() == 2  # the upgrade's two service messages
    assert remote.message(group, 999) is None
    assert remote.webhook_url is None


def test_only_control_operations_are_served(remote: RemoteStandIn) -> None:
    """The endpoint runs operations, not any attribute of the stand-in (stop, _world …)."""
    for name in ("stop", "_control_call", "wait_for", "nothing"):
        answer = httpx.post(f"{remote.control_url}/{name}", json={}, trust_env=False)
        assert answer.status_code == 400
        assert answer.json() == {
            "error": f"{name!r} is not a control operation of the stand-in",
            "type": "AttributeError",
        }
    assert "stop" not in OPERATIONS and "migrate_to_supergroup" in OPERATIONS
