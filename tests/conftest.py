"""Shared pytest fixtures: real tansu (Kafka protocol) and real PostgreSQL, started once per session."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.kafka",
]
