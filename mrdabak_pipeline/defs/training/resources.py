"""The resources only training needs: the Pipes launcher and the OpenAI/Azure fine-tuning client."""

from __future__ import annotations

import dagster as dg

from mrdabak_pipeline.defs.training.cloud import default_openai_resource
from mrdabak_pipeline.defs.training.k8s import training_pipes_client


@dg.definitions
def training_resources() -> dg.Definitions:
    """`pipes_subprocess_client` runs the training script in its own process, or in a Kubernetes
    pod when ``training.launcher`` is k8s (`defs.training.k8s`); `openai` reads its keys through
    `dg.EnvVar` (see `default_openai_resource`)."""
    return dg.Definitions(
        resources={"pipes_subprocess_client": training_pipes_client(), "openai": default_openai_resource()}
    )
