"""Shared test fixtures. Component fixtures (PostgreSQL, Slurm) live in tests/fixtures/."""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.slurm"]
