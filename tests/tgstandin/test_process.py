"""Process mode (`python -m tgstandin`) driven through RemoteStandIn."""

from __future__ import annotations

import contextlib
import inspect
import subprocess
import sys
from collections.abc import Iterator

import pytest
import telegram.error

from tests.tgstandin.support import make_bot, run
from tgstandin import StandIn
from tgstandin.remote import RemoteStandIn
from tgstandin.server import CONTROL_METHODS


@pytest.fixture
def remote() -> Iterator[RemoteStandIn]:
    command = [
        sys.executable,
        "-m",
        "tgstandin",
        "--users",
        "5",
        "--blocked",
        "1",
        "--deactivated",
        "1",
        "--start-id",
        "7000",
    ]
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
    assert remote.user_ids() == [7000, 7001, 7002, 7003, 7004]
    assert remote.user_state(7000) == "blocked" and remote.user_state(7001) == "deactivated"
    admin = remote.add_user(1, first_name="Ada")
    post = remote.send_text(admin, "Big news")

    async def broadcast() -> None:
        async with make_bot(remote) as bot:
            for user in remote.user_ids():
                # Blocked and deactivated people answer 403; a broadcast moves on.
                with contextlib.suppress(telegram.error.Forbidden):
                    await bot.copy_message(user, admin, post["message_id"])

    run(broadcast())
    assert remote.deliveries(7002) == 1
    assert remote.count("copyMessage", 403) == 2
    copy = remote.wait_for_message(7002, lambda m: m["text"] == "Big news", timeout=5)
    assert copy["copied_from"] == (admin, post["message_id"])
    remote.wait_for(lambda: remote.count("copyMessage", 200) == 4, timeout=5)
    calls = remote.calls("copyMessage")
    assert [c.status for c in calls].count(200) == 4 and calls[0].params["from_chat_id"] == admin
    with pytest.raises(ValueError, match="no user 99"):
        remote.send_text(99, "who am I")
    with pytest.raises(AssertionError, match="no bot message in chat 7003"):
        remote.wait_for_message(7003, lambda m: m["text"] == "never", timeout=0.2)


def test_remote_mirrors_the_local_api() -> None:
    """Every remotely callable StandIn method exists on RemoteStandIn with the same parameters."""
    for name in sorted(CONTROL_METHODS | {"wait_for", "wait_for_message"}):
        local = inspect.signature(getattr(StandIn, name))
        mirrored = inspect.signature(getattr(RemoteStandIn, name))
        assert list(local.parameters) == list(mirrored.parameters), name
