"""Developer tools that run in CI (architecture checks)."""
