"""Persistence: models, engine/session set-up, and the queries the bot layer uses."""
