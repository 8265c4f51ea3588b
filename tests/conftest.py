"""Root conftest: fixtures live in tests/fixtures/ and are loaded as plugins."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.database",
    "tests.fixtures.standin",
    "tests.fixtures.bot",
    "tests.fixtures.process",
]
