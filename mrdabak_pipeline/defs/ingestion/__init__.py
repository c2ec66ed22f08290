"""Dagster shell of stage 1: raw_conversation_logs and the raw DB resource."""
