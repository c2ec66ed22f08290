"""Dagster shell of stage 2: cleaned/rejected/augmented sessions and their checks."""
