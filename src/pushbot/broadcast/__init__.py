"""The broadcast engine: thread pool, pacing, error classes and the delivery ledger."""
