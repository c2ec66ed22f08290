"""Stage 3, datasets: chat examples, DPO pairs, the dataset files, OpenAI-format validation, token counts."""
