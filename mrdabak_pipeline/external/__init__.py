"""Scripts that run in their own process, launched through Dagster Pipes (no Dagster import)."""
