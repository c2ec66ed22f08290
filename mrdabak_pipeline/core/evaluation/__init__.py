"""Evaluation of base vs fine-tuned models on what the production app needs.

`metrics` scores replies against references (JSON validity, order fields, rules, consistency,
chrF, an optional LLM judge), `generate` produces replies from local Hugging Face models or any
OpenAI-compatible endpoint the same way, and `report` renders the Markdown/PNG/JSON report and the
promotion gate. Pure Python: no Dagster import.
"""
