"""Where the Pipes training script runs: a local subprocess (default) or a Kubernetes pod.

The ``training.launcher`` setting picks the client behind the ``pipes_subprocess_client``
resource key: ``subprocess`` -> `dg.PipesSubprocessClient`; ``k8s`` -> `K8sTrainingClient`, a
`dagster_k8s.PipesK8sClient` that runs the same command (``python -m ...train_entry``, or the
distributed launcher) in a pod built from `K8sTrainingSettings`: image, namespace, GPU limits
(``nvidia.com/gpu``), node selector, tolerations, the data folder on a shared volume, plain
(non-secret) environment and Kubernetes Secrets through ``envFrom``. Nothing secret is ever put in
the pod spec's ``env``: a name that looks like a credential is refused.

Settings come from the YAML file named by ``MRDABAK_TRAINING_CONFIG`` (its ``training:`` section,
see deploy/training-k8s.yaml); ``MRDABAK_TRAINING_LAUNCHER`` overrides ``training.launcher``.
dagster-k8s (the ``[k8s]`` extra) is imported only when a pod is launched.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

CONFIG_ENV = "MRDABAK_TRAINING_CONFIG"
LAUNCHER_ENV = "MRDABAK_TRAINING_LAUNCHER"
GPU_RESOURCE = "nvidia.com/gpu"
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)


class K8sTrainingSettings(BaseModel):
    """The training pod. ``data_mount_path`` must be where the code location's data folder is
    (``MRDABAK_DATA_DIR``) in the run pods too: the Pipes extras carry absolute paths under it."""

    model_config = ConfigDict(extra="forbid")

    image: str
    namespace: str | None = None
    gpus: int = Field(default=1, ge=0)
    cpu: str | None = None
    memory: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    data_volume_claim: str
    data_mount_path: str = "/data"
    env: dict[str, str] = Field(default_factory=dict)
    env_from_secrets: list[str] = Field(default_factory=list)
    service_account: str | None = None
    image_pull_secrets: list[str] = Field(default_factory=list)
    python: str = "python"
    shm_size: str | None = "8Gi"
    in_cluster: bool = True

    @field_validator("env")
    @classmethod
    def _no_plain_secrets(cls, env: dict[str, str]) -> dict[str, str]:
        secret = sorted(k for k in env if _SECRET_NAME.search(k))
        if secret:
            raise ValueError(f"{', '.join(secret)} look like credentials: put them in a Kubernetes Secret "
                             "and name it in env_from_secrets (the pod spec's env is plain text)")
        return env


class LauncherSettings(BaseModel):
    """The ``training:`` section of the training config file."""

    model_config = ConfigDict(extra="forbid")

    launcher: Literal["subprocess", "k8s"] = "subprocess"
    k8s: K8sTrainingSettings | None = None


def load_launcher_settings(environ: Mapping[str, str] = os.environ) -> LauncherSettings:
    """Settings from ``$MRDABAK_TRAINING_CONFIG`` (if set) with ``$MRDABAK_TRAINING_LAUNCHER`` on top."""
    raw: dict[str, Any] = {}
    if environ.get(CONFIG_ENV):
        raw = dict((yaml.safe_load(Path(environ[CONFIG_ENV]).read_text()) or {}).get("training") or {})
    if environ.get(LAUNCHER_ENV):
        raw["launcher"] = environ[LAUNCHER_ENV]
    settings = LauncherSettings.model_validate(raw)
    if settings.launcher == "k8s" and settings.k8s is None:
        raise ValueError(f"training.launcher is k8s but {CONFIG_ENV} has no training.k8s section")
    return settings


def base_pod_spec(settings: K8sTrainingSettings) -> dict[str, Any]:
    """The pod spec `PipesK8sClient` starts from (it adds the image, command, name and Pipes env)."""
    limits: dict[str, str] = {}
    if settings.gpus:
        limits[GPU_RESOURCE] = str(settings.gpus)
    if settings.cpu:
        limits["cpu"] = settings.cpu
    if settings.memory:
        limits["memory"] = settings.memory
    mounts = [{"name": "data", "mountPath": settings.data_mount_path}]
    volumes: list[dict[str, Any]] = [{"name": "data", "persistentVolumeClaim": {"claimName": settings.data_volume_claim}}]
    if settings.shm_size:  # NCCL and the DataLoader need more than the container's 64 MiB /dev/shm
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}})
    container: dict[str, Any] = {
        "name": "train",
        "env": [{"name": "MRDABAK_DATA_DIR", "value": settings.data_mount_path},
                *({"name": k, "value": v} for k, v in sorted(settings.env.items()))],
        "envFrom": [{"secretRef": {"name": name}} for name in settings.env_from_secrets],
        "resources": {"limits": limits, "requests": dict(limits)},
        "volumeMounts": mounts,
    }
    spec: dict[str, Any] = {"containers": [container], "volumes": volumes, "restartPolicy": "Never"}
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        spec["tolerations"] = list(settings.tolerations)
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    return spec


def _check_paths(extras: Mapping[str, Any], mount: str) -> None:
    for key in ("dataset_path", "output_dir", "models_dir"):
        if key in extras and not Path(str(extras[key])).is_relative_to(mount):
            raise dg.Failure(description=f"{key} {extras[key]} is not under the pod's data volume ({mount}): "
                             "set MRDABAK_DATA_DIR to training.k8s.data_mount_path in the code location")


class K8sTrainingClient(dg.PipesClient):
    """`PipesK8sClient` with the pod settings bound: ``run(context=, command=, extras=)`` like
    `dg.PipesSubprocessClient`, so `fine_tuned_model` does not know where training runs."""

    def __init__(self, settings: K8sTrainingSettings) -> None:
        self.settings = settings

    def run(self, *, context: dg.AssetExecutionContext, command: Sequence[str],  # type: ignore[override]
            extras: dict[str, Any] | None = None) -> dg.PipesClientCompletedInvocation:
        from dagster_k8s import PipesK8sClient

        s = self.settings
        _check_paths(extras or {}, s.data_mount_path)
        # The Dagster process's interpreter path means nothing in the image: use the image's python.
        command = [s.python if i == 0 and c == sys.executable else c for i, c in enumerate(command)]
        return PipesK8sClient(load_incluster_config=s.in_cluster).run(
            context=context, extras=extras, image=s.image, command=command, namespace=s.namespace,
            base_pod_spec=base_pod_spec(s), base_pod_meta={"labels": {"app.kubernetes.io/component": "training"}},
        )


def training_pipes_client(settings: LauncherSettings | None = None) -> dg.PipesClient:
    """The client the ``training.launcher`` setting selects."""
    settings = settings or load_launcher_settings()
    if settings.launcher == "k8s":
        assert settings.k8s is not None
        return K8sTrainingClient(settings.k8s)
    return dg.PipesSubprocessClient()
