"""Issue 18 against the local fake API: preflight, DPO uploads, honest uploads, the cancel guard, visible retries, Azure tiers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from mrdabak_pipeline.core.cloud import (
    OPENAI_NEW_JOBS_END,
    ArmTarget,
    AzureServing,
    CloudFineTuneRequest,
    DatasetChangedError,
    DatasetNotReadyError,
    FineTuningClient,
    JobCreationRefusedError,
    PreflightError,
    build_job_spec,
    make_sdk_client,
    retirement_warning,
    run_cloud_fine_tune,
    sha256_file,
)
from mrdabak_pipeline.core.cloud.lifecycle import lifecycle_from_model
from mrdabak_pipeline.core.domain import assistant_target
from mrdabak_pipeline_tests.core.cloud.test_run import KEY, Recorder, Stopped, openai_client
from mrdabak_pipeline_tests.fake_openai_api import FakeOpenAIServer, FakeState, serve

pytestmark = pytest.mark.integration

TODAY = date(2026, 12, 1)
BASE = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with serve(FakeState(api_key=KEY)) as srv:
        yield srv


def chat_dataset(tmp_path: Path) -> dict[str, Any]:
    from mrdabak_pipeline_tests.core.cloud.test_cloud import write_dataset

    train, valid = write_dataset(tmp_path)
    return {"train_path": str(train), "validation_path": str(valid), "train_sha256": sha256_file(train),
            "validation_sha256": sha256_file(valid)}


def dpo_dataset(tmp_path: Path, n: int = 6) -> dict[str, Any]:
    """The dpo_dataset value shape (core.datasets.build.write_preference_dataset) with OpenAI-format pairs."""
    folder = tmp_path / "dpo"
    folder.mkdir()

    def pair(i: int) -> str:
        return json.dumps({
            "input": {"messages": [{"role": "user", "content": f"발렌타인 디너 {i}인분"}]},
            "preferred_output": [{"role": "assistant", "content": assistant_target("네.", {"dinnerType": "valentine", "quantity": i})}],
            "non_preferred_output": [{"role": "assistant", "content": assistant_target("네.", {"dinnerType": "french"})}],
        }, ensure_ascii=False)

    train = folder / "openai_train.jsonl"
    train.write_text("\n".join(pair(i) for i in range(1, n + 1)) + "\n", encoding="utf-8")
    return {"format": "dpo", "pair_count": n, "openai_train_path": str(train), "openai_train_sha256": sha256_file(train),
            "openai_validation_path": None, "openai_validation_sha256": None,
            "trl_train_path": str(folder / "trl_train.jsonl")}


def make_request(dataset: dict[str, Any], tmp_path: Path, backend: str = "openai", *, method: str = "supervised",
                 training_type: str | None = None, **kw: Any) -> CloudFineTuneRequest:
    spec = build_job_spec(backend=backend, method=method, n_epochs=2, training_type=training_type)
    return CloudFineTuneRequest(spec=spec, dataset=dataset, models_dir=tmp_path / "models", run_id="run-18",
                                poll_interval_s=0.001, today=kw.pop("today", TODAY), **kw)


# ---------------------------------------------------------------- the cancel guard
def test_stop_while_the_job_is_being_created_cancels_the_job(server: FakeOpenAIServer, tmp_path: Path) -> None:
    """The stop lands after the server made the job but before its id reached us: the job is found and cancelled."""
    client = openai_client(server)
    jobs = client.sdk.fine_tuning.jobs
    real_create = jobs.create

    def create_then_stop(**kwargs: Any) -> Any:
        real_create(**kwargs)
        raise Stopped()

    jobs.create = create_then_stop  # type: ignore[method-assign]
    rec = Recorder()
    with pytest.raises(Stopped):
        run_cloud_fine_tune(client, make_request(chat_dataset(tmp_path), tmp_path), rec.hooks())
    (job,) = server.state.jobs.values()
    assert job["status"] == "cancelled"
    assert ("POST", f"/v1/fine_tuning/jobs/{job['id']}/cancel") in server.state.requests
    assert rec.jobs == []  # the id was never handed back: the guard found the job itself


def test_stop_right_after_creation_before_polling_cancels_the_job(server: FakeOpenAIServer, tmp_path: Path) -> None:
    rec = Recorder()

    def stop(job_id: str) -> None:
        raise Stopped()

    hooks = rec.hooks()
    hooks = type(hooks)(log=hooks.log, sleep=hooks.sleep, on_job=stop, interrupts=hooks.interrupts)
    with pytest.raises(Stopped):
        run_cloud_fine_tune(openai_client(server), make_request(chat_dataset(tmp_path), tmp_path), hooks)
    (job,) = server.state.jobs.values()
    assert job["status"] == "cancelled" and rec.sleeps == 0  # stopped before the first poll
    assert any(f"cancelled fine-tuning job {job['id']}" in m for _, m in rec.lines)


def test_stop_during_upload_leaves_nothing_to_cancel(server: FakeOpenAIServer, tmp_path: Path) -> None:
    client = openai_client(server)
    files = client.sdk.files

    def stop(**kwargs: Any) -> Any:
        raise Stopped()

    files.create = stop  # type: ignore[method-assign]
    rec = Recorder()
    with pytest.raises(Stopped):
        run_cloud_fine_tune(client, make_request(chat_dataset(tmp_path), tmp_path), rec.hooks())
    assert server.state.jobs_created == 0 and any("nothing to cancel" in m for _, m in rec.lines)


# ---------------------------------------------------------------- DPO and honest uploads
def test_dpo_uploads_the_preference_pairs_not_the_chat_file(server: FakeOpenAIServer, tmp_path: Path) -> None:
    dpo = dpo_dataset(tmp_path)
    result = run_cloud_fine_tune(openai_client(server), make_request(dpo, tmp_path, method="dpo"), Recorder().hooks())
    job = server.state.jobs[result.job_id]
    assert job["method"]["type"] == "dpo" and job["status"] == "succeeded"
    assert server.state.file_content[job["training_file"]] == Path(dpo["openai_train_path"]).read_bytes()
    assert server.state.files[job["training_file"]]["filename"] == f"openai_train-{dpo['openai_train_sha256'][:16]}.jsonl"


def test_dpo_without_pairs_or_with_the_chat_file_is_refused(server: FakeOpenAIServer, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotReadyError, match="dpo_dataset has no openai_train_path"):
        run_cloud_fine_tune(openai_client(server), make_request({"pair_count": 0}, tmp_path, method="dpo"), Recorder().hooks())
    assert server.state.uploads == 0
    # the fake API validates like the real one: the SFT file under method dpo is a 400
    chat = chat_dataset(tmp_path)
    wrong = {"openai_train_path": chat["train_path"], "openai_train_sha256": chat["train_sha256"]}
    with pytest.raises(Exception, match="not a valid dpo file"):
        run_cloud_fine_tune(openai_client(server), make_request(wrong, tmp_path, method="dpo"), Recorder().hooks())
    assert server.state.jobs_created == 0


def test_a_file_changed_after_the_dataset_run_is_never_uploaded(server: FakeOpenAIServer, tmp_path: Path) -> None:
    dataset = chat_dataset(tmp_path)
    with Path(dataset["train_path"]).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"messages": [{"role": "user", "content": "추가"}]}, ensure_ascii=False) + "\n")
    with pytest.raises(DatasetChangedError, match="changed on disk"):
        run_cloud_fine_tune(openai_client(server), make_request(dataset, tmp_path), Recorder().hooks())
    assert server.state.uploads == 0 and server.state.jobs_created == 0


# ---------------------------------------------------------------- retries
def test_sdk_retries_are_logged_with_status_and_wait(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.state.inject(429, count=2, path_contains="/files", method="POST")
    server.state.inject(503, count=1, path_contains="/fine_tuning/jobs", method="POST")
    rec = Recorder()
    run_cloud_fine_tune(openai_client(server), make_request(chat_dataset(tmp_path), tmp_path), rec.hooks())
    retries = [m for level, m in rec.lines if level == "warning" and m.startswith("API retry")]
    assert sum("HTTP 429" in m for m in retries) == 2 and sum("HTTP 503" in m for m in retries) == 1
    assert all("waiting 0.0" in m for m in retries)  # the server's retry-after-ms: 5 is honoured and shown
    assert server.state.jobs_created == 1


# ---------------------------------------------------------------- preflight
def test_preflight_refuses_before_any_upload(server: FakeOpenAIServer, tmp_path: Path) -> None:
    dataset = chat_dataset(tmp_path)
    server.state.models = {}  # the organisation sees no such model
    with pytest.raises(PreflightError, match="not available"):
        run_cloud_fine_tune(openai_client(server), make_request(dataset, tmp_path), Recorder().hooks())
    server.state.models = {BASE: {"shutdown_date": "2027-01-14"}}
    with pytest.raises(PreflightError, match="before the planned deployment ends"):
        run_cloud_fine_tune(openai_client(server), make_request(dataset, tmp_path, serve_until=date(2027, 6, 30)),
                            Recorder().hooks())
    with pytest.raises(PreflightError, match="stopped accepting new fine-tuning jobs"):
        run_cloud_fine_tune(openai_client(server), make_request(dataset, tmp_path, today=OPENAI_NEW_JOBS_END),
                            Recorder().hooks())
    assert server.state.uploads == 0


def test_preflight_warns_and_records_the_retirement(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.state.models = {BASE: {"shutdown_date": "2027-01-14"}}
    rec = Recorder()
    result = run_cloud_fine_tune(openai_client(server), make_request(chat_dataset(tmp_path), tmp_path), rec.hooks())
    assert result.base_model_retires_on == date(2027, 1, 14) and result.value()["base_model_retires_on"] == "2027-01-14"
    warnings = [m for level, m in rec.lines if level == "warning"]
    assert any("shuts down on 2027-01-14 (44 days)" in m for m in warnings)
    assert any("2027-01-06" in m for m in warnings)


def test_an_organisation_refused_by_the_api_gets_a_clear_error(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.state.jobs_blocked = True
    with pytest.raises(JobCreationRefusedError, match="backend 'azure' or 'local'"):
        run_cloud_fine_tune(openai_client(server), make_request(chat_dataset(tmp_path), tmp_path), Recorder().hooks())


def test_azure_lifecycle_fields_and_retirement_warning() -> None:
    life = lifecycle_from_model("gpt-4o-mini", {"deprecation": {"inference": 1798761600, "fine_tune": 1767225600},
                                                "capabilities": {"fine_tune": True}})
    assert life.retires_on == date(2027, 1, 1) and life.fine_tune_ends_on == date(2026, 1, 1) and life.fine_tunable
    assert retirement_warning(life, TODAY, 31) is not None and retirement_warning(life, TODAY, 30) is None


# ---------------------------------------------------------------- Azure tiers
def test_azure_training_and_deployment_types_reach_the_api(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.state.arm_token = "arm-token"
    client = FineTuningClient(make_sdk_client("azure", api_key=KEY, azure_endpoint=server.url), "azure")
    arm = ArmTarget("sub", "rg", "acct", "arm-token", base_url=server.url, sku="developertier")
    serving = AzureServing(endpoint=server.url, arm_target=arm, deployment_type="developer")
    result = run_cloud_fine_tune(client, make_request(chat_dataset(tmp_path), tmp_path, "azure",
                                                      training_type="global_standard", azure=serving), Recorder().hooks())
    assert server.state.jobs[result.job_id]["trainingType"] == "GlobalStandard"
    assert server.state.deployments[result.deployment_name or ""]["sku"]["name"] == "developertier"
    assert result.value()["deployment_name"] == result.serving_model
    assert any("24 hours" in n for n in result.cost_notes) and any("Global Standard" in n for n in result.cost_notes)
    with pytest.raises(ValueError, match="training_type"):
        build_job_spec(backend="openai", training_type="standard")
