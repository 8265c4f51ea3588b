"""Settings: every variable's default and parsing; malformed values name their variable."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from pushbot.config import (
    DEFAULT_BROADCAST_RATE,
    DEFAULT_DATABASE_URL,
    DEFAULT_TELEGRAM_BASE_URL,
    PAID_BROADCAST_MAX_RATE,
    ConfigError,
    Settings,
    TelegramTransport,
    load_settings,
)

TOKEN = "123456789:AAE-secret_part"


def settings(**variables: str) -> Settings:
    """Settings from exactly these variables (no process environment, no .env)."""
    return load_settings({"BOT_TOKEN": TOKEN, **variables}, env_file=None)


def config_error(**variables: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        settings(**variables)
    return caught.value


# --- defaults ----------------------------------------------------------------------------------


def test_every_default() -> None:
    loaded = settings()

    assert loaded.bot_token == TOKEN
    assert loaded.admin_ids == frozenset()
    assert loaded.database_url == DEFAULT_DATABASE_URL == "sqlite:///pushbot.sqlite3"
    assert loaded.telegram_base_url == DEFAULT_TELEGRAM_BASE_URL == "https://api.telegram.org/bot"
    assert (loaded.broadcast_workers, loaded.broadcast_pool_size) == (None, None)
    assert loaded.effective_broadcast_workers == 30
    assert loaded.effective_broadcast_pool_size == 30
    assert loaded.broadcast_rate == DEFAULT_BROADCAST_RATE == 29.8
    assert loaded.paid_broadcast is False
    assert loaded.log_level == "INFO"
    assert loaded.webhook_url is None
    assert loaded.webhook_listen == "127.0.0.1"
    assert loaded.webhook_port == 8443
    assert loaded.webhook_path == "telegram"
    assert loaded.webhook_secret is None
    assert loaded.update_concurrency == 64
    assert loaded.reply_queue_limit == 10_000
    assert loaded.uses_webhook is False
    assert loaded.telegram_transport is TelegramTransport.AIOHTTP
    assert loaded.default_timezone == ZoneInfo("UTC")


def test_defaults_match_the_settings_model() -> None:
    assert settings() == Settings(bot_token=TOKEN)


def test_blank_values_count_as_unset() -> None:
    blank = {
        name: "  "
        for name in (
            "ADMIN_IDS",
            "DATABASE_URL",
            "TELEGRAM_BASE_URL",
            "BROADCAST_WORKERS",
            "BROADCAST_POOL_SIZE",
            "BROADCAST_RATE",
            "PAID_BROADCAST",
            "LOG_LEVEL",
            "WEBHOOK_URL",
            "WEBHOOK_LISTEN",
            "WEBHOOK_PORT",
            "WEBHOOK_PATH",
            "WEBHOOK_SECRET",
            "UPDATE_CONCURRENCY",
            "TELEGRAM_TRANSPORT",
            "DEFAULT_TIMEZONE",
        )
    }

    assert settings(**blank) == Settings(bot_token=TOKEN)


# --- BOT_TOKEN ---------------------------------------------------------------------------------


def test_the_token_is_required() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({}, env_file=None)

    assert caught.value.variable == "BOT_TOKEN"
    assert str(caught.value).startswith("BOT_TOKEN: ")


def test_the_token_is_optional_for_tools_that_do_not_talk_to_telegram() -> None:
    assert load_settings({}, env_file=None, require_token=False).bot_token == ""


def test_the_token_is_not_shown_in_repr() -> None:
    assert TOKEN not in repr(settings())


def test_the_token_is_stripped() -> None:
    assert settings(BOT_TOKEN=f"  {TOKEN}\n").bot_token == TOKEN


# --- valid values ------------------------------------------------------------------------------


def test_admin_ids_are_a_comma_separated_list() -> None:
    assert settings(ADMIN_IDS=" 42, 7,,42 ").admin_ids == frozenset({42, 7})
    assert settings(ADMIN_IDS="42").is_admin(42)
    assert not settings(ADMIN_IDS="42").is_admin(None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgres://u:p@db/pushbot", "postgresql+psycopg2://u:p@db/pushbot"),
        ("postgresql://u:p@db/pushbot", "postgresql+psycopg2://u:p@db/pushbot"),
        ("postgresql+psycopg2://u:p@db/pushbot", "postgresql+psycopg2://u:p@db/pushbot"),
        ("sqlite:////var/lib/pushbot/bot.sqlite3", "sqlite:////var/lib/pushbot/bot.sqlite3"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_database_urls_are_normalised_to_psycopg2(raw: str, expected: str) -> None:
    assert settings(DATABASE_URL=raw).database_url == expected


def test_numbers_are_read() -> None:
    loaded = settings(
        BROADCAST_WORKERS="8",
        BROADCAST_POOL_SIZE="12",
        BROADCAST_RATE="12.5",
        WEBHOOK_PORT="88",
        UPDATE_CONCURRENCY="4096",
        REPLY_QUEUE_LIMIT="100",
    )

    assert (loaded.broadcast_workers, loaded.broadcast_pool_size) == (8, 12)
    assert (loaded.effective_broadcast_workers, loaded.effective_broadcast_pool_size) == (8, 12)
    assert (loaded.broadcast_rate, loaded.webhook_port, loaded.update_concurrency) == (
        12.5,
        88,
        4096,
    )
    assert loaded.reply_queue_limit == 100


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on"])
def test_paid_broadcast_true(raw: str) -> None:
    assert settings(PAID_BROADCAST=raw).paid_broadcast is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "off"])
def test_paid_broadcast_false(raw: str) -> None:
    assert settings(PAID_BROADCAST=raw).paid_broadcast is False


def test_paid_broadcast_raises_the_rate_limit() -> None:
    assert settings(PAID_BROADCAST="true").broadcast_rate == DEFAULT_BROADCAST_RATE
    assert settings(PAID_BROADCAST="true", BROADCAST_RATE="1000").broadcast_rate == 1000.0
    assert PAID_BROADCAST_MAX_RATE == 1000.0


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        ("29.8", 30),  # the floor: a slow paid broadcast keeps the free tier's pool
        ("200", 30),
        ("400", 60),
        ("1000", 150),  # rate × latency: ~150 requests in flight at 1,000/s over 150 ms
    ],
)
def test_paid_broadcasts_derive_enough_requests_in_flight(rate: str, expected: int) -> None:
    loaded = settings(PAID_BROADCAST="true", BROADCAST_RATE=rate)

    assert (loaded.broadcast_workers, loaded.broadcast_pool_size) == (None, None)
    assert loaded.effective_broadcast_workers == expected
    assert loaded.effective_broadcast_pool_size == expected


def test_derived_requests_in_flight_are_capped() -> None:
    loaded = Settings(bot_token=TOKEN, paid_broadcast=True, broadcast_rate=1e9)

    assert (loaded.effective_broadcast_workers, loaded.effective_broadcast_pool_size) == (200, 200)


def test_free_broadcasts_derive_thirty_whatever_the_rate() -> None:
    loaded = Settings(bot_token=TOKEN, broadcast_rate=1000.0)

    assert (loaded.effective_broadcast_workers, loaded.effective_broadcast_pool_size) == (30, 30)


def test_set_workers_and_pool_size_win_over_the_derived_ones() -> None:
    loaded = settings(
        PAID_BROADCAST="true", BROADCAST_RATE="1000", BROADCAST_WORKERS="7", BROADCAST_POOL_SIZE="9"
    )

    assert (loaded.effective_broadcast_workers, loaded.effective_broadcast_pool_size) == (7, 9)


@pytest.mark.parametrize(("raw", "expected"), [("httpx", "httpx"), ("AIOHTTP", "aiohttp")])
def test_telegram_transport(raw: str, expected: str) -> None:
    assert settings(TELEGRAM_TRANSPORT=raw).telegram_transport == TelegramTransport(expected)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires"])
def test_default_timezone_is_an_iana_zone(zone: str) -> None:
    assert settings(DEFAULT_TIMEZONE=zone).default_timezone == ZoneInfo(zone)


def test_log_level_is_case_insensitive() -> None:
    assert settings(LOG_LEVEL="debug").log_level == "DEBUG"


def test_telegram_base_url_for_a_local_bot_api_server() -> None:
    url = "http://127.0.0.1:8081/bot"
    assert settings(TELEGRAM_BASE_URL=url).telegram_base_url == url


def test_webhook_settings() -> None:
    loaded = settings(
        WEBHOOK_URL="https://bot.example/hook",
        WEBHOOK_SECRET="s3cret_-X",
        WEBHOOK_LISTEN="0.0.0.0",
        WEBHOOK_PORT="8080",
        WEBHOOK_PATH="/hook/",
    )

    assert loaded.uses_webhook
    assert (loaded.webhook_url, loaded.webhook_secret) == ("https://bot.example/hook", "s3cret_-X")
    assert (loaded.webhook_listen, loaded.webhook_port, loaded.webhook_path) == (
        "0.0.0.0",
        8080,
        "hook",
    )
    assert "s3cret" not in repr(loaded)


# --- malformed values --------------------------------------------------------------------------

MALFORMED = [
    ("BOT_TOKEN", "no-colon-here", {}),
    ("BOT_TOKEN", "abc:secret", {}),
    ("ADMIN_IDS", "42,@alice", {}),
    ("ADMIN_IDS", "12x", {}),
    ("ADMIN_IDS", "-", {}),
    ("DATABASE_URL", "mysql://u@db/pushbot", {}),
    ("DATABASE_URL", "postgresql+asyncpg://u@db/pushbot", {}),
    ("DATABASE_URL", "pushbot.sqlite3", {}),
    ("TELEGRAM_BASE_URL", "api.telegram.org/bot", {}),
    ("BROADCAST_WORKERS", "many", {}),
    ("BROADCAST_WORKERS", "0", {}),
    ("BROADCAST_WORKERS", "257", {}),
    ("BROADCAST_WORKERS", "2.5", {}),
    ("BROADCAST_POOL_SIZE", "-1", {}),
    ("BROADCAST_POOL_SIZE", "lots", {}),
    ("BROADCAST_RATE", "fast", {}),
    ("BROADCAST_RATE", "0", {}),
    ("BROADCAST_RATE", "-3", {}),
    ("BROADCAST_RATE", "30.5", {}),
    ("BROADCAST_RATE", "1001", {"PAID_BROADCAST": "true"}),
    ("BROADCAST_RATE", "nan", {}),
    ("BROADCAST_RATE", "inf", {}),
    ("PAID_BROADCAST", "maybe", {}),
    ("LOG_LEVEL", "LOUD", {}),
    ("WEBHOOK_URL", "bot.example/hook", {"WEBHOOK_SECRET": "s"}),
    ("WEBHOOK_SECRET", "", {"WEBHOOK_URL": "https://bot.example/hook"}),
    ("WEBHOOK_SECRET", "has space", {}),
    ("WEBHOOK_SECRET", "x" * 257, {}),
    ("WEBHOOK_PORT", "http", {}),
    ("WEBHOOK_PORT", "0", {}),
    ("WEBHOOK_PORT", "65536", {}),
    ("UPDATE_CONCURRENCY", "0", {}),
    ("UPDATE_CONCURRENCY", "4097", {}),
    ("REPLY_QUEUE_LIMIT", "99", {}),
    ("REPLY_QUEUE_LIMIT", "1000001", {}),
    ("REPLY_QUEUE_LIMIT", "lots", {}),
    ("TELEGRAM_TRANSPORT", "requests", {}),
    ("DEFAULT_TIMEZONE", "Mars/Olympus_Mons", {}),
    ("DEFAULT_TIMEZONE", "/etc/passwd", {}),
    ("DEFAULT_TIMEZONE", "CEST", {}),
]


@pytest.mark.parametrize(
    ("variable", "raw", "others"),
    MALFORMED,
    ids=[f"{variable}={raw[:20]!r}" for variable, raw, _ in MALFORMED],
)
def test_malformed_values_name_their_variable(
    variable: str, raw: str, others: dict[str, str]
) -> None:
    error = config_error(**{**others, variable: raw})

    assert error.variable == variable
    assert str(error).startswith(f"{variable}: ")
    assert isinstance(error, ValueError)


def test_a_malformed_token_is_not_shown_in_the_error() -> None:
    error = config_error(BOT_TOKEN="123456789:has space")

    assert "has space" not in str(error) and "123456789" not in str(error)


def test_several_malformed_values_are_one_line_naming_them_all() -> None:
    error = config_error(BROADCAST_WORKERS="many", LOG_LEVEL="LOUD", WEBHOOK_PORT="0")

    assert error.variable == "BROADCAST_WORKERS"
    assert str(error) == (
        "BROADCAST_WORKERS: must be a whole number, got 'many' (also check LOG_LEVEL, WEBHOOK_PORT)"
    )


def test_the_error_shows_the_offending_value() -> None:
    assert "'many'" in str(config_error(BROADCAST_WORKERS="many"))
    assert "'@alice'" in str(config_error(ADMIN_IDS="42,@alice"))


@pytest.mark.parametrize("raw", ["--5", "²", "-5", "1_0"])
def test_odd_admin_ids_are_config_errors(raw: str) -> None:
    assert config_error(ADMIN_IDS=raw).variable == "ADMIN_IDS"


@pytest.mark.parametrize("raw", ["123:", "²:abc", "123:has space"])
def test_a_token_without_secret_is_malformed(raw: str) -> None:
    assert config_error(BOT_TOKEN=raw).variable == "BOT_TOKEN"


# --- the Settings object ---------------------------------------------------------------------


def test_settings_are_immutable_and_hashable() -> None:
    loaded = settings()

    with pytest.raises(ValidationError):
        loaded.broadcast_rate = 1.0
    assert hash(loaded) == hash(settings())


def test_a_changed_copy_keeps_the_original() -> None:
    loaded = settings()

    changed = loaded.model_copy(update={"broadcast_workers": 4})

    assert (changed.broadcast_workers, loaded.broadcast_workers) == (4, None)
    assert changed.bot_token == TOKEN


def test_settings_built_directly_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROADCAST_WORKERS", "5")

    assert Settings(bot_token=TOKEN).broadcast_workers is None


def test_settings_built_directly_may_exceed_telegrams_rate_for_the_standin() -> None:
    assert Settings(bot_token=TOKEN, broadcast_rate=100_000.0).broadcast_rate == 100_000.0


def test_settings_built_directly_are_still_validated() -> None:
    with pytest.raises(ValidationError):
        Settings(bot_token=TOKEN, webhook_url="https://bot.example/hook")


# --- sources -----------------------------------------------------------------------------------


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"BOT_TOKEN={TOKEN}\nLOG_LEVEL=DEBUG\nWEBHOOK_PORT=9000\n")

    loaded = load_settings({"LOG_LEVEL": "ERROR"}, env_file=env_file)

    assert (loaded.bot_token, loaded.log_level, loaded.webhook_port) == (TOKEN, "ERROR", 9000)


def test_blank_and_unknown_dotenv_lines_are_ignored(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"BOT_TOKEN={TOKEN}\nWEBHOOK_URL=\nBROADCAST_WORKERS=\nOTHER_TOOL=1\n")

    loaded = load_settings({}, env_file=env_file)

    assert (loaded.webhook_url, loaded.broadcast_workers) == (None, None)


def test_a_blank_variable_in_the_environment_hides_the_dotenv_value(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"BOT_TOKEN={TOKEN}\nLOG_LEVEL=DEBUG\n")

    assert load_settings({"LOG_LEVEL": " "}, env_file=env_file).log_level == "INFO"


def test_an_unreadable_dotenv_file_is_one_line_naming_it(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_bytes(b"BOT_TOKEN=\xff\xfe\n")

    with pytest.raises(ConfigError) as caught:
        load_settings({}, env_file=env_file)

    assert str(caught.value) == f"{env_file}: cannot be read (it is not UTF-8 text)"


def test_the_example_dotenv_file_gives_the_defaults() -> None:
    example = Path(__file__).resolve().parents[1] / ".env.example"

    loaded = load_settings({}, env_file=example)

    assert loaded == Settings(bot_token="123456789:replace-with-your-token")


def test_a_missing_dotenv_file_is_fine(tmp_path: Path) -> None:
    assert load_settings({"BOT_TOKEN": TOKEN}, env_file=tmp_path / "absent.env").bot_token == TOKEN


def test_the_process_environment_is_the_default_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_TOKEN", TOKEN)
    monkeypatch.setenv("BROADCAST_WORKERS", "5")

    assert load_settings(env_file=None).broadcast_workers == 5
