"""Construction-time settings of the stand-in (most can be changed at runtime too)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StandInConfig:
    token: str = "123456:TEST-token-abcdefghijklmnop"
    # None: the numeric prefix of the token, which is what Telegram's bot ids are.
    bot_id: int | None = None
    bot_username: str = "pushbot_test_bot"
    bot_first_name: str = "PushBot"
    host: str = "127.0.0.1"
    port: int = 0
    # Flood limits, modelled on Telegram's documented "about 30 messages per second" etc.
    global_rate: float = 30.0
    global_burst: int = 10
    per_chat_rate: float = 1.0
    per_chat_burst: int = 3
    group_per_minute: int = 20
    paid_rate: float = 1000.0
    paid_burst: int = 50
    limits_enabled: bool = True
    retry_after_penalty: int = 0
    # Response delay, uniform in [low, high] seconds.
    latency: tuple[float, float] = (0.0, 0.0)
    # How long a "timeout" fault holds the response before dropping the connection.
    timeout_hold: float = 10.0
    # Bots have privacy mode on by default: in groups they only see commands, replies to
    # their own messages and service messages.
    privacy_mode: bool = True
    webhook_timeout: float = 10.0
    webhook_max_attempts: int = 30
    webhook_backoff: float = 0.05
    webhook_max_backoff: float = 1.0
    first_update_id: int = 100_000_001
    seed: int | None = None

    def resolved_bot_id(self) -> int:
        if self.bot_id is not None:
            return self.bot_id
        prefix = self.token.split(":", 1)[0]
        if not prefix.isdigit():
            raise ValueError(f"bot token {self.token!r} must start with the numeric bot id")
        return int(prefix)
