"""defs.training.cloud: the cloud backend of fine_tuned_model, materialized against the local fake API.

The orchestration itself is tested without Dagster in core/cloud/test_run.py; these tests check the
mapping: config/resources in, run log, run tag, termination, value and metadata out."""


import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import openai
import pytest

from mrdabak_pipeline.core.cloud import CloudCredentialsError, sha256_file
from mrdabak_pipeline.defs.io_manager import ParquetJsonIOManager
from mrdabak_pipeline.defs.resources import DataPathsResource
from mrdabak_pipeline.defs.training import cloud as cloud_defs
from mrdabak_pipeline.defs.training.cloud import (
    CloudFineTuneConfig,
    OpenAIFineTuningResource,
    default_openai_resource,
    run_cloud_fine_tune,
)
from mrdabak_pipeline_tests.core.cloud.test_cloud import write_dataset
from mrdabak_pipeline_tests.fake_openai_api import FakeOpenAIServer, FakeState, serve

KEY = "sk-proj-NEVER-LOG-ME-7f3a9c2e1d"
AZURE_KEY = "azure-key-NEVER-LOG-ME-55aa"
ARM_TOKEN = "arm-token-NEVER-LOG-ME-99bb"
SECRETS = (KEY, AZURE_KEY, ARM_TOKEN)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZURE_KEY)
    monkeypatch.setenv("AZURE_ARM_TOKEN", ARM_TOKEN)
    for var in ("OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT", "AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZURE_OPENAI_ACCOUNT"):
        monkeypatch.delenv(var, raising=False)
    with serve(FakeState(api_key=KEY)) as srv:
        yield srv


@pytest.fixture
def dataset(tmp_path: Path) -> dict[str, Any]:
    train, valid = write_dataset(tmp_path)
    return {
        "train_path": str(train),
        "validation_path": str(valid),
        "train_sha256": sha256_file(train),
        "validation_sha256": sha256_file(valid),
        "estimated_cost_usd": 0.0123,
    }


def assets_for(dataset: dict[str, Any], backend: str = "openai", dpo: dict[str, Any] | None = None) -> list[dg.AssetsDefinition]:
    """Stand-ins for the real openai_chat_dataset / dpo_dataset and a fine_tuned_model as thin as training.py's."""

    @dg.asset(name="openai_chat_dataset")
    def openai_chat_dataset() -> dict[str, Any]:
        return dataset

    @dg.asset(name="dpo_dataset")
    def dpo_dataset() -> dict[str, Any]:
        return dpo or {"format": "dpo", "pair_count": 0}

    @dg.asset(name="fine_tuned_model")
    def fine_tuned_model(
        context: dg.AssetExecutionContext,
        config: CloudFineTuneConfig,
        openai_ft: OpenAIFineTuningResource,
        data_paths: DataPathsResource,
        openai_chat_dataset: dict[str, Any],
        dpo_dataset: dict[str, Any],
    ) -> dg.Output:
        return run_cloud_fine_tune(context, openai_ft, config, backend, openai_chat_dataset, data_paths, dpo_dataset)

    return [openai_chat_dataset, dpo_dataset, fine_tuned_model]


def materialize(
    server: FakeOpenAIServer,
    dataset: dict[str, Any],
    instance: dg.DagsterInstance,
    tmp_path: Path,
    *,
    backend: str = "openai",
    resource: OpenAIFineTuningResource | None = None,
    dpo: dict[str, Any] | None = None,
    **config: Any,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets_for(dataset, backend, dpo),
        instance=instance,
        resources={
            "openai_ft": resource or OpenAIFineTuningResource(base_url=server.openai_base_url),
            "io_manager": ParquetJsonIOManager(base_dir=str(tmp_path / "storage")),
            # not MRDABAK_DATA_DIR (tmp_path / "data", conftest): artifacts must follow the resource
            "data_paths": DataPathsResource(root=str(tmp_path / "configured")),
        },
        run_config={"ops": {"fine_tuned_model": {"config": {"poll_interval_s": 0.001, **config}}}},
        raise_on_error=False,
    )


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


@pytest.fixture
def disk_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """An instance that writes its event log and run storage to files (scanned for the key)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def materialization(result: dg.ExecuteInProcessResult) -> dg.AssetMaterialization:
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey("fine_tuned_model")]
    assert len(mats) == 1
    return mats[0].materialization


def assert_no_secret_anywhere(instance: dg.DagsterInstance, tmp_path: Path, *texts: str) -> None:
    """Scan every event-log record, every file written under tmp_path and any extra text."""
    logs = "\n".join(str(entry) for run in instance.get_runs() for entry in instance.all_logs(run.run_id))
    assert logs and all(s not in logs for s in SECRETS)
    for text in texts:
        assert all(s not in text for s in SECRETS)
    scanned = 0
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            scanned += 1
            assert all(s.encode() not in data for s in SECRETS), f"secret found in {path}"
    assert scanned > 3


def test_happy_path_value_metadata_logs_and_no_key_leak(
    server: FakeOpenAIServer, dataset: dict[str, Any], disk_instance: dg.DagsterInstance, tmp_path: Path,
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
    # the Definitions resource: the key is a dagster.EnvVar, resolved only inside the run
    result = materialize(server, dataset, disk_instance, tmp_path, resource=default_openai_resource(),
                         n_epochs=3, batch_size="1", learning_rate_multiplier="0.1", seed=42)
    assert result.success
    value = result.output_for_node("fine_tuned_model")
    assert value["backend"] == "openai" and value["model_id"].startswith("ft:gpt-4o-mini-2024-07-18:")
    assert value["base_url"] == server.openai_base_url and value["inference_model"] == value["model_id"]
    assert value["metrics"]["trained_tokens"] > 0 and value["metrics"]["estimated_cost_usd"] == 0.0123
    assert [c["step"] for c in value["metrics"]["checkpoints"]] == [2, 4, 6]
    job = server.state.jobs[value["job_id"]]
    assert job["method"]["supervised"]["hyperparameters"] == {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 0.1}
    assert job["seed"] == 42 and job["user_provided_suffix"] == "mrdabak-voice-order"

    md = materialization(result).metadata
    assert md["model_id"].value == value["model_id"] and md["attached_to_existing_job"].value is False
    assert md["trained_tokens"].value == value["metrics"]["trained_tokens"]
    assert md["actual_cost_usd"].value > 0 and md["estimated_cost_usd"].value == 0.0123
    assert Path(md["loss_curve"].value).read_bytes()[:4] == b"\x89PNG"
    assert Path(md["loss_curve"].value).is_relative_to(tmp_path / "configured" / "models" / "cloud")
    checkpoints = md["checkpoints"]
    assert isinstance(checkpoints, dg.TableMetadataValue)
    assert [c.name for c in checkpoints.schema.columns][:3] == ["step", "model", "train_loss"]
    assert {c.name: c.type for c in checkpoints.schema.columns}["step"] == "int"
    assert [r.data["step"] for r in checkpoints.records] == [2, 4, 6]
    assert isinstance(md["trained_tokens"], dg.IntMetadataValue) and isinstance(md["final_train_loss"], dg.FloatMetadataValue)
    assert f"voice.llm.model={value['model_id']}" in md["app_settings"].value
    assert "voice.llm.api-key=${OPENAI_API_KEY}" in md["app_settings"].value
    assert md["final_train_loss"].value == pytest.approx(2.0 / 6, abs=1e-3)

    messages = [e.user_message for e in disk_instance.all_logs(result.run_id)]
    assert any("Created fine-tuning job" in m for m in messages)
    assert any("status: running" in m for m in messages) and any("successfully completed" in m for m in messages)
    assert disk_instance.get_run_by_id(result.run_id).tags[cloud_defs.RUN_TAG_JOB_ID] == value["job_id"]

    # the app settings really point at a model that answers
    reply = openai.OpenAI(api_key=KEY, base_url=value["base_url"]).chat.completions.create(
        model=value["inference_model"], messages=[{"role": "user", "content": "발렌타인 디너 주세요"}]
    )
    assert json.loads(reply.choices[0].message.content)["orderState"]["dinnerType"] == "valentine"
    out, err = capfd.readouterr()
    assert_no_secret_anywhere(disk_instance, tmp_path, json.dumps(value), str(md), out, err)


def test_retried_run_attaches_to_the_running_job(
    server: FakeOpenAIServer, dataset: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    polls: list[float] = []

    def dies_while_running(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 3:
            raise RuntimeError("the run worker was lost")

    monkeypatch.setattr(cloud_defs, "_poll_sleep", dies_while_running)
    first = materialize(server, dataset, instance, tmp_path)
    assert not first.success
    (job_id,) = server.state.jobs
    assert server.state.jobs[job_id]["status"] == "running"  # paid for and still going

    monkeypatch.setattr(cloud_defs, "_poll_sleep", lambda s: None)
    second = materialize(server, dataset, instance, tmp_path)
    assert second.success
    assert second.output_for_node("fine_tuned_model")["job_id"] == job_id
    assert materialization(second).metadata["attached_to_existing_job"].value is True
    assert server.state.jobs_created == 1 and server.state.uploads == 2
    # and a third run (already succeeded) attaches again instead of training anew
    third = materialize(server, dataset, instance, tmp_path)
    assert third.success and server.state.jobs_created == 1


def test_failed_job_fails_the_asset_with_its_code_and_message(
    server: FakeOpenAIServer, dataset: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path,
) -> None:
    server.state.script_next_job("validating_files", "failed", error_code="invalid_training_file",
                                 error_message="Line 4: messages must end with an assistant turn")
    result = materialize(server, dataset, instance, tmp_path)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    text = str(failure.step_failure_data.user_failure_data or failure.step_failure_data.error)
    assert "invalid_training_file" in text and "Line 4: messages must end with an assistant turn" in text
    assert failure.step_failure_data.user_failure_data.metadata["error_code"].value == "invalid_training_file"


def test_rate_limits_and_5xx_are_retried_without_a_second_job(
    server: FakeOpenAIServer, dataset: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path,
) -> None:
    server.state.inject(429, count=2, path_contains="/files", method="POST")
    server.state.inject(500, count=1, path_contains="/fine_tuning/jobs", method="POST")
    server.state.inject(502, count=7, path_contains="/fine_tuning/jobs/", method="GET")
    result = materialize(server, dataset, instance, tmp_path)
    assert result.success and server.state.jobs_created == 1 and server.state.uploads == 2
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if "transient error" in e.user_message]
    assert warnings  # 7 x 502 outlast the SDK's 5 retries: the poll loop logged and kept going


def test_terminating_the_run_cancels_the_job_unless_configured_not_to(
    server: FakeOpenAIServer, dataset: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def terminated(seconds: float) -> None:
        raise dg.DagsterExecutionInterruptedError()

    monkeypatch.setattr(cloud_defs, "_poll_sleep", terminated)
    kept_run = materialize(server, dataset, instance, tmp_path, cancel_on_run_termination=False)
    assert not kept_run.success
    (kept,) = server.state.jobs.values()
    assert kept["status"] not in ("cancelled", "failed")

    cancelled_run = materialize(server, dataset, instance, tmp_path, n_epochs=2)
    assert not cancelled_run.success
    cancelled = [j for j in server.state.jobs.values() if j["id"] != kept["id"]]
    assert [j["status"] for j in cancelled] == ["cancelled"]
    messages = [e.user_message for e in instance.all_logs(cancelled_run.run_id)]
    assert any(f"cancelled fine-tuning job {cancelled[0]['id']}" in m for m in messages)


def test_azure_backend_deploys_via_arm_and_records_settings(
    server: FakeOpenAIServer, dataset: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.state.api_key = AZURE_KEY
    server.state.arm_token = ARM_TOKEN
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.url)
    arm = OpenAIFineTuningResource(arm_subscription_id="sub", arm_resource_group="rg", arm_account_name="acct",
                                   arm_base_url=server.url)
    refused = materialize(server, dataset, instance, tmp_path, backend="azure", resource=arm, suffix="mrdabak-voice-order")
    assert not refused.success  # an OpenAI-length suffix is refused before anything is uploaded
    (failure,) = [e for e in refused.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "azure allows at most 18" in str(failure.step_failure_data.error)
    assert server.state.uploads == 0

    result = materialize(server, dataset, instance, tmp_path, backend="azure", resource=arm, n_epochs=3)
    assert result.success
    value = result.output_for_node("fine_tuned_model")
    assert value["backend"] == "azure" and value["base_url"] == server.url + "/openai/v1"
    assert value["inference_model"] in server.state.deployments
    md = materialization(result).metadata
    assert "via ARM (Succeeded)" in md["azure_deployment"].value
    assert f"voice.llm.model={value['inference_model']}" in md["app_settings"].value
    assert "${AZURE_OPENAI_API_KEY}" in md["app_settings"].value

    no_arm = materialize(server, dataset, instance, tmp_path, backend="azure",
                         resource=OpenAIFineTuningResource(), n_epochs=4)
    assert no_arm.success
    assert "az cognitiveservices account deployment create" in materialization(no_arm).metadata["azure_deployment"].value
    assert_no_secret_anywhere(instance, tmp_path)


def test_resource_needs_no_key_until_a_cloud_job_is_requested(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_ARM_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    resource = default_openai_resource()
    assert resource.api_key is None and resource.arm_target() is None
    with pytest.raises(CloudCredentialsError, match="OPENAI_API_KEY"):
        resource.get_client("openai")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert isinstance(OpenAIFineTuningResource().get_client("openai").sdk, openai.OpenAI)


def test_loss_curve_is_written_under_the_configured_data_root(
    server: FakeOpenAIServer, dataset: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path,
) -> None:
    result = materialize(server, dataset, instance, tmp_path)
    assert result.success
    curve = Path(materialization(result).metadata["loss_curve"].value)
    assert curve.is_file() and curve.is_relative_to(tmp_path / "configured" / "models" / "cloud")
    assert not (tmp_path / "data" / "models").exists()  # nothing under the default MRDABAK_DATA_DIR


# ---------------------------------------------------------------- issue 18
def failure_of(result: dg.ExecuteInProcessResult) -> Any:
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    return failure.step_failure_data


def test_dpo_method_trains_on_dpo_dataset_and_retries_show_in_the_run_log(
    server: FakeOpenAIServer, dataset: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path,
) -> None:
    from mrdabak_pipeline_tests.core.cloud.test_issue18 import dpo_dataset

    dpo = dpo_dataset(tmp_path)
    server.state.inject(429, count=1, path_contains="/files", method="POST")
    result = materialize(server, dataset, instance, tmp_path, dpo=dpo, method="dpo")
    assert result.success
    (job,) = server.state.jobs.values()
    assert job["method"]["type"] == "dpo"
    assert server.state.file_content[job["training_file"]] == Path(dpo["openai_train_path"]).read_bytes()
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any(m.startswith("API retry 1/5") and "HTTP 429" in m for m in messages)
    metadata = materialization(result).metadata
    assert metadata["base_model_retires_on"].value == "no date announced"


def test_refusals_before_upload_fail_without_retry(
    server: FakeOpenAIServer, dataset: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path,
) -> None:
    Path(dataset["train_path"]).write_text("{}\n", encoding="utf-8")  # rewritten after the dataset run
    changed = failure_of(materialize(server, dataset, instance, tmp_path))
    assert "changed on disk" in str(changed.user_failure_data.description)
    server.state.models = {}
    missing = failure_of(materialize(server, {**dataset, "train_sha256": sha256_file(Path(dataset["train_path"]))},
                                     instance, tmp_path))
    assert "not available" in str(missing.user_failure_data.description)
    assert server.state.uploads == 0


def test_termination_right_after_creation_cancels_the_job(
    server: FakeOpenAIServer, dataset: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM lands while the job id is being recorded (before polling starts): the job is still cancelled."""

    def interrupted(self: Any, run_id: str, tags: dict[str, str]) -> None:
        if cloud_defs.RUN_TAG_JOB_ID in tags:
            raise dg.DagsterExecutionInterruptedError()

    monkeypatch.setattr(dg.DagsterInstance, "add_run_tags", interrupted)
    result = materialize(server, dataset, instance, tmp_path)
    assert not result.success
    (job,) = server.state.jobs.values()
    assert job["status"] == "cancelled"
    assert ("POST", f"/v1/fine_tuning/jobs/{job['id']}/cancel") in server.state.requests


def test_retirement_checks_warn_for_cloud_models_only() -> None:
    from datetime import date

    from mrdabak_pipeline.defs.training.checks import retirement_result

    soon = retirement_result({"backend": "openai", "model_id": "ft:gpt-4o-mini-2024-07-18:org:mrdabak:abc"}, date(2026, 12, 1))
    assert not soon.passed and soon.severity == dg.AssetCheckSeverity.WARN and "2027-01-14" in (soon.description or "")
    assert retirement_result({"backend": "openai", "model_id": "ft:x", "base_model_retires_on": "2030-01-01"},
                             date(2026, 12, 1)).passed
    assert retirement_result({"backend": "local", "model_path": "/m"}, date(2026, 12, 1)).passed
