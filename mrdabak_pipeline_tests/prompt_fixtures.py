"""A fixed conversation moment and its rendered system prompt, for tests that need a plausible chat."""

from mrdabak_pipeline.core.prompts import PromptKind, system_prompt

#: Tuesday 2026-12-01 15:00 in Seoul.
NOW = "2026-12-01T15:00:00+09:00"
SYSTEM_PROMPT = system_prompt(NOW, PromptKind.SHORT)
FULL_SYSTEM_PROMPT = system_prompt(NOW, PromptKind.FULL)
