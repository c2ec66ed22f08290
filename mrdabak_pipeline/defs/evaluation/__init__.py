"""Dagster shell of stage 5: evaluation_report, the promotion gate and promoted_model."""
