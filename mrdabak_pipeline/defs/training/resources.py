"""The resources only training needs: the Pipes launcher and the OpenAI/Azure fine-tuning client."""

from __future__ import annotations

import dagster as dg

from mrdabak_pipeline.defs.training.cloud import default_openai_resource


@dg.definitions
def training_resources() -> dg.Definitions:
    """`pipes_subprocess_client` runs the training script in its own process; `openai` reads its
    keys through `dg.EnvVar` (see `default_openai_resource`)."""
    return dg.Definitions(
        resources={"pipes_subprocess_client": dg.PipesSubprocessClient(), "openai": default_openai_resource()}
    )
