"""deploy/: the Dockerfile's essentials, the Helm values and the instance files agree with each other.

`docker build` and `helm template` cannot run here (no Docker daemon, no chart, no network), so
these tests check what can be checked from the files: the Dockerfile installs the CPU/CUDA torch
build first and then the package with its ``[k8s]`` extra and starts the code location the project
declares; the Helm values say in the chart's words what deploy/dagster.k8s.yaml says in Dagster's
(same pool and tag limits, run monitoring, PostgreSQL, volumes, secrets); the training pod sees the
data volume where the run pods do. With the chart unpacked (``helm pull dagster/dagster --version
1.13.27 --untar``) and ``MRDABAK_HELM_CHART_DIR`` pointing at it, the values merged over the chart's
defaults are also validated against the chart's ``values.schema.json``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY = REPO_ROOT / "deploy"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
MODULE = PYPROJECT["tool"]["dagster"]["module_name"]


def _yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / name).read_text())


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: continuations joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


# --- Dockerfile ---------------------------------------------------------------------------------

def test_dockerfile_installs_the_torch_build_then_the_package_and_serves_the_code_location() -> None:
    steps = _instructions(DEPLOY / "Dockerfile")
    args = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
    assert args["TORCH_VARIANT"] == "cpu"
    # One base stage per variant; the final stage picks it by the build argument.
    froms = [a for op, a in steps if op == "FROM"]
    bases = {a.split(" AS ")[1]: a.split()[0] for a in froms if " AS " in a}
    assert bases["base-cpu"].startswith("python:3.11")
    assert bases["base-cu128"].startswith("nvidia/cuda:12.8") and "runtime" in bases["base-cu128"]
    assert froms[-1] == "base-${TORCH_VARIANT}"
    # The variant named in deploy/training-k8s.yaml for the GPU image is one of them.
    assert "TORCH_VARIANT=cu128" in (DEPLOY / "training-k8s.yaml").read_text()

    runs = [a for op, a in steps if op == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if '"torch==${TORCH_VERSION}"' in r)
    assert '--index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"' in runs[torch_at]
    package_at = next(i for i, r in enumerate(runs) if 'pip install ".[k8s]"' in r)
    assert torch_at < package_at  # the wheel chosen first, so `.[k8s]` does not pull another torch
    # The torch pinned here is the one the Makefile installs and pyproject allows.
    assert f"torch=={args['TORCH_VERSION']}" in (REPO_ROOT / "Makefile").read_text()
    assert "dagster-k8s==" in " ".join(PYPROJECT["project"]["optional-dependencies"]["k8s"])
    assert any(MODULE in r for r in runs[package_at:])  # the image imports the code location at build time

    (cmd,) = [json.loads(a) for op, a in steps if op == "CMD"]
    assert cmd[:3] == ["dagster", "code-server", "start"] and cmd[cmd.index("-m") + 1] == MODULE
    env = dict(kv.split("=", 1) for op, a in steps if op == "ENV" for kv in shlex.split(a))
    assert env["MRDABAK_DATA_DIR"] == "/data" and env["DAGSTER_HOME"] == "/opt/dagster/dagster_home"
    copied = {src for op, a in steps if op == "COPY" for src in a.split()[:-1]}  # the last one is the target
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1:][:3] == ["!pyproject.toml", "!README.md", "!mrdabak_pipeline/"]
    assert copied == {"pyproject.toml", "README.md", "mrdabak_pipeline"}  # all the context lets in


# --- Instance files ----------------------------------------------------------------------------

def test_k8s_instance_matches_the_postgres_one_except_the_run_launcher() -> None:
    k8s, postgres = _yaml("dagster.k8s.yaml"), _yaml("dagster.postgres.yaml")
    launcher = k8s.pop("run_launcher")
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    assert postgres.pop("run_launcher")["class"] == "LocalHealthCheckRunLauncher"
    assert k8s == postgres


# --- Helm values -------------------------------------------------------------------------------

def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _snake_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_snake(k): _snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake_keys(v) for v in value]
    return value


def test_helm_values_render_the_same_instance_as_dagster_k8s_yaml() -> None:
    values, k8s = _yaml("helm/values-dagster.yaml"), _yaml("dagster.k8s.yaml")
    launcher = k8s["run_launcher"]["config"]

    # Storage: external PostgreSQL, password from the Secret the run launcher injects.
    pg = values["postgresql"]
    assert pg["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert pg["postgresqlScheme"] == k8s["storage"]["postgres"]["postgres_db"]["scheme"]
    assert values["global"]["postgresqlSecretName"] == launcher["postgres_password_secret"]
    assert values["global"]["serviceAccountName"] == values["serviceAccount"]["name"] == launcher["service_account_name"]

    # Queue, `gpu` pool, run monitoring: the chart's camelCase keys are Dagster's snake_case ones.
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["concurrency"]["enabled"] is True
    concurrency = _snake_keys({k: v for k, v in values["concurrency"].items() if k != "enabled"})
    assert concurrency == k8s["concurrency"]
    monitoring = _snake_keys(values["dagsterDaemon"]["runMonitoring"])
    assert monitoring == k8s["run_monitoring"]
    assert (values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["dequeueIntervalSeconds"]
            == k8s["run_queue"]["dequeue_interval_seconds"])

    # Run pods: K8sRunLauncher, same resources and pod security context.
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    chart_launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert chart_launcher["loadInclusterConfig"] is launcher["load_incluster_config"] is True
    assert chart_launcher["resources"] == launcher["resources"]
    assert chart_launcher["labels"] == launcher["labels"]
    assert _snake_keys(chart_launcher["runK8sConfig"]) == launcher["run_k8s_config"]

    # The code location (and through includeConfigInLaunchedRuns its run pods): the image's code
    # server for this project's module, the env, secrets and volumes the hand-written launcher sets.
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["codeServerArgs"] == ["-m", MODULE]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert deployment["env"] == dict(e.split("=", 1) for e in launcher["env_vars"] if "=" in e)
    assert [s["name"] for s in deployment["envSecrets"]] == launcher["env_secrets"]
    assert deployment["volumes"] == launcher["volumes"]
    assert deployment["volumeMounts"] == launcher["volume_mounts"]
    assert deployment["podSecurityContext"] == chart_launcher["runK8sConfig"]["podSpecConfig"]["securityContext"]


def test_the_training_pod_sees_the_data_volume_where_the_run_pods_do() -> None:
    """The Pipes extras carry absolute paths under MRDABAK_DATA_DIR: all pods mount it alike."""
    training = _yaml("training-k8s.yaml")["training"]["k8s"]
    (deployment,) = _yaml("helm/values-dagster.yaml")["dagster-user-deployments"]["deployments"]
    claim = {v["name"]: v for v in deployment["volumes"]}["data"]["persistentVolumeClaim"]["claimName"]
    mount = {m["name"]: m for m in deployment["volumeMounts"]}["data"]["mountPath"]
    assert (training["data_volume_claim"], training["data_mount_path"]) == (claim, mount)
    assert deployment["env"]["MRDABAK_DATA_DIR"] == mount
    config_mount = {m["name"]: m for m in deployment["volumeMounts"]}["training-config"]["mountPath"]
    assert Path(deployment["env"]["MRDABAK_TRAINING_CONFIG"]).parent == Path(config_mount)
    assert training["image"].rsplit(":", 1)[0] == deployment["image"]["repository"]


def _merge(base: Any, override: Any) -> Any:
    """Helm's values merge: maps merge key by key, anything else (lists too) is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = copy.deepcopy(base)
        for key, value in override.items():
            merged[key] = _merge(base.get(key), value) if key in base else value
        return merged
    return override


def _permissive_remote_refs(schema: Any) -> Any:
    """The chart's schema points at kubernetesjsonschema.dev for Kubernetes objects; offline,
    those parts are not checked (the chart's own keys and types still are)."""
    if isinstance(schema, dict):
        return {k: _permissive_remote_refs(v) for k, v in schema.items()
                if not (k == "$ref" and isinstance(v, str) and v.startswith("http"))}
    if isinstance(schema, list):
        return [_permissive_remote_refs(v) for v in schema]
    return schema


def test_helm_values_validate_against_the_charts_schema() -> None:
    chart = os.environ.get("MRDABAK_HELM_CHART_DIR")
    if not chart:
        pytest.skip("set MRDABAK_HELM_CHART_DIR to an unpacked dagster/dagster chart (helm pull --untar) to validate")
    import jsonschema

    chart_dir = Path(chart)
    schema = _permissive_remote_refs(json.loads((chart_dir / "values.schema.json").read_text()))
    merged = _merge(yaml.safe_load((chart_dir / "values.yaml").read_text()), _yaml("helm/values-dagster.yaml"))
    jsonschema.validate(merged, schema)
