"""``training.launcher: k8s``: the pod `dagster_k8s.PipesK8sClient` is asked to create.

The real `PipesK8sClient.run` builds the pod; only the Kubernetes API is replaced (it records the
pod and refuses it, so nothing waits for a cluster).
"""


from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

pytest.importorskip("dagster_k8s")

from mrdabak_pipeline.core.training.distributed import Distributed, launch_command  # noqa: E402
from mrdabak_pipeline.defs.training.k8s import (  # noqa: E402
    K8sTrainingClient,
    load_launcher_settings,
    training_pipes_client,
)

DEPLOY = Path(__file__).parents[3] / "deploy"


class _Refused(Exception):
    pass


class _FakeCoreApi:
    def __init__(self) -> None:
        self.created: list[tuple[str, Any]] = []

    def create_namespaced_pod(self, namespace: str, body: Any) -> None:
        self.created.append((namespace, body))
        raise _Refused


def _launch(monkeypatch: pytest.MonkeyPatch, client: dg.PipesClient, command: list[str],
            extras: dict[str, Any]) -> tuple[str, Any]:
    import kubernetes
    from dagster_k8s import pipes

    api = _FakeCoreApi()
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda: None)
    monkeypatch.setattr(pipes.DagsterKubernetesClient, "production_client",
                        staticmethod(lambda: type("C", (), {"core_api": api})()))

    @dg.asset
    def trains(context: dg.AssetExecutionContext) -> None:
        client.run(context=context, command=command, extras=extras)

    dg.materialize([trains], raise_on_error=False)
    assert len(api.created) == 1
    return api.created[0]


def _settings(tmp_path: Path, **k8s: Any) -> Path:
    cfg = yaml.safe_load((DEPLOY / "training-k8s.yaml").read_text())
    cfg["training"]["k8s"] |= k8s
    path = tmp_path / "training.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_pod_runs_the_training_command_on_a_gpu_node_with_secrets_from_a_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_launcher_settings({"MRDABAK_TRAINING_CONFIG": str(_settings(tmp_path, gpus=2))})
    client = training_pipes_client(settings)
    assert isinstance(client, K8sTrainingClient)
    command = launch_command(Distributed(num_processes=2), "mrdabak_pipeline.external.train_entry")
    extras = {"dataset_path": "/data/datasets/hf", "output_dir": "/data/models/fine_tuned/k",
              "models_dir": "/data/models", "settings": {"base_model": "tiny"}}
    namespace, pod = _launch(monkeypatch, client, command, extras)

    assert namespace == "mrdabak"
    (container,) = pod.spec.containers
    assert container.image == "registry.example.com/mrdabak-pipeline:cuda"
    assert container.command[:3] == ["python", "-m", "mrdabak_pipeline.external.launcher"]  # image's python
    assert container.command[-2:] == ["-m", "mrdabak_pipeline.external.train_entry"]
    assert "--nproc_per_node" in container.command
    assert container.resources.limits["nvidia.com/gpu"] == "2"
    env = {e.name: e.value for e in container.env}
    assert env["MRDABAK_DATA_DIR"] == "/data" and "DAGSTER_PIPES_CONTEXT" in env
    assert not [k for k in env if any(w in k for w in ("KEY", "TOKEN", "SECRET", "PASSWORD"))]
    assert [e.secret_ref.name for e in container.env_from] == ["mrdabak-training-secrets"]
    mounts = {m.name: m.mount_path for m in container.volume_mounts}
    assert mounts == {"data": "/data", "dshm": "/dev/shm"}
    claims = {v.name: v.persistent_volume_claim for v in pod.spec.volumes}
    assert claims["data"].claim_name == "mrdabak-data"
    assert pod.spec.node_selector == {"nvidia.com/gpu.present": "true"}
    assert pod.spec.tolerations[0].key == "nvidia.com/gpu"
    assert pod.spec.restart_policy == "Never"


def test_plain_text_credentials_and_paths_off_the_volume_are_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="OPENAI_API_KEY look like credentials"):
        load_launcher_settings({"MRDABAK_TRAINING_CONFIG": str(_settings(tmp_path, env={"OPENAI_API_KEY": "sk"}))})
    settings = load_launcher_settings({"MRDABAK_TRAINING_CONFIG": str(_settings(tmp_path))})

    @dg.asset
    def trains(context: dg.AssetExecutionContext) -> None:
        training_pipes_client(settings).run(context=context, command=["python"], extras={"output_dir": "/home/x"})

    result = dg.materialize([trains], raise_on_error=False)
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "not under the pod's data volume" in failure.step_failure_data.user_failure_data.description


def test_subprocess_is_the_default_and_the_env_var_selects_k8s(tmp_path: Path) -> None:
    assert isinstance(training_pipes_client(load_launcher_settings({})), dg.PipesSubprocessClient)
    cfg = {"MRDABAK_TRAINING_CONFIG": str(_settings(tmp_path))}
    assert isinstance(training_pipes_client(load_launcher_settings(cfg)), K8sTrainingClient)  # the file says k8s
    assert isinstance(training_pipes_client(load_launcher_settings(cfg | {"MRDABAK_TRAINING_LAUNCHER": "subprocess"})),
                      dg.PipesSubprocessClient)
    with pytest.raises(ValueError, match="no training.k8s section"):
        load_launcher_settings({"MRDABAK_TRAINING_LAUNCHER": "k8s"})
