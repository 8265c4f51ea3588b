"""Alembic migrations, shipped inside the package as `pushbot.migrations`."""
