"""Dagster shell of stage 4: fine_tuned_model (local via Pipes, or a cloud job)."""
