"""Dagster shell of stage 3: the OpenAI, Hugging Face and DPO datasets and their checks."""
