"""A Telegram Bot API stand-in for tests, the demo and benchmarks (loopback only)."""
