"""core.cloud.run: one whole cloud fine-tuning run without Dagster, against the local fake API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mrdabak_pipeline.core.cloud import (
    ArmTarget,
    AzureServing,
    CloudFineTuneRequest,
    CloudHooks,
    DatasetNotReadyError,
    FineTuningClient,
    JobFailedError,
    build_job_spec,
    make_sdk_client,
    run_cloud_fine_tune,
    sha256_file,
)
from mrdabak_pipeline_tests.core.cloud.test_cloud import write_dataset
from mrdabak_pipeline_tests.fake_openai_api import FakeOpenAIServer, FakeState, serve

#: Every test here starts the local fake OpenAI server: the integration tier (conftest.py).
pytestmark = pytest.mark.integration

KEY = "sk-test-run-0123456789abcdef"


class Stopped(BaseException):
    """Stands in for the caller's "run terminated" exception (Dagster's is one of these)."""


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with serve(FakeState(api_key=KEY)) as srv:
        yield srv


@pytest.fixture
def dataset(tmp_path: Path) -> dict[str, Any]:
    train, valid = write_dataset(tmp_path)
    return {"train_path": str(train), "validation_path": str(valid), "train_sha256": sha256_file(train),
            "validation_sha256": sha256_file(valid), "estimated_cost_usd": 0.5}


class Recorder:
    """The hooks a caller passes: a log, instant sleeps (optionally raising), the job id it was told."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.lines: list[tuple[str, str]] = []
        self.jobs: list[str] = []
        self.sleeps = 0
        self.stop_after = stop_after

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if self.stop_after is not None and self.sleeps >= self.stop_after:
            raise Stopped()

    def hooks(self) -> CloudHooks:
        return CloudHooks(log=lambda level, msg: self.lines.append((level, msg)), sleep=self.sleep,
                          on_job=self.jobs.append, interrupts=(Stopped,))


def request(dataset: dict[str, Any], tmp_path: Path, backend: str = "openai", **kw: Any) -> CloudFineTuneRequest:
    spec = build_job_spec(backend=backend, n_epochs=kw.pop("n_epochs", 2))
    return CloudFineTuneRequest(spec=spec, dataset=dataset, models_dir=tmp_path / "models", run_id="run-1",
                                poll_interval_s=0.001, **kw)


def openai_client(srv: FakeOpenAIServer) -> FineTuningClient:
    return FineTuningClient(make_sdk_client("openai", api_key=KEY, base_url=srv.openai_base_url))


def test_a_run_creates_follows_and_sums_up_the_job(server: FakeOpenAIServer, dataset: dict[str, Any], tmp_path: Path) -> None:
    rec = Recorder()
    result = run_cloud_fine_tune(openai_client(server), request(dataset, tmp_path), rec.hooks())
    assert rec.jobs == [result.job_id] and server.state.jobs[result.job_id]["status"] == "succeeded"
    assert result.model_id.startswith("ft:") and result.serving_model == result.model_id
    assert result.base_url == server.openai_base_url and not result.attached and result.uploads_reused == 0
    assert [c["step"] for c in result.checkpoints] == [2, 4, 6] and result.trained_tokens
    assert result.curve_png is not None and result.curve_png.read_bytes()[:4] == b"\x89PNG"
    assert result.curve_png.parent == tmp_path / "models"
    assert result.settings["properties"]["voice.llm.model"] == result.model_id
    value = result.value()
    assert value["inference_model"] == result.model_id and value["metrics"]["trained_tokens"] == result.trained_tokens
    assert value["metrics"]["final_train_loss"] == result.curve_summary["final_train_loss"]
    messages = [m for _, m in rec.lines]
    assert any(m.startswith("created openai fine-tuning job") for m in messages)
    assert any("status: succeeded" in m for m in messages)
    # the same request again pays nothing: it attaches to the succeeded job
    again = run_cloud_fine_tune(openai_client(server), request(dataset, tmp_path), Recorder().hooks())
    assert again.attached and again.job_id == result.job_id and server.state.jobs_created == 1


def test_an_interrupt_cancels_the_job_or_keeps_it(server: FakeOpenAIServer, dataset: dict[str, Any], tmp_path: Path) -> None:
    rec = Recorder(stop_after=1)
    with pytest.raises(Stopped):
        run_cloud_fine_tune(openai_client(server), request(dataset, tmp_path), rec.hooks())
    (job,) = server.state.jobs.values()
    assert job["status"] == "cancelled" and ("warning", f"run terminated: cancelled fine-tuning job {job['id']}") in rec.lines

    kept = Recorder(stop_after=1)
    with pytest.raises(Stopped):
        run_cloud_fine_tune(openai_client(server), request(dataset, tmp_path, n_epochs=3, cancel_on_interrupt=False), kept.hooks())
    (alive,) = [j for j in server.state.jobs.values() if j["id"] != job["id"]]
    assert alive["status"] not in ("cancelled", "failed") and any("keeps running" in m for _, m in kept.lines)


def test_a_failed_job_and_a_missing_dataset_raise_before_any_value(
    server: FakeOpenAIServer, dataset: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(DatasetNotReadyError, match="train_path"):
        run_cloud_fine_tune(openai_client(server), request({}, tmp_path), Recorder().hooks())
    assert server.state.uploads == 0
    server.state.script_next_job("validating_files", "failed", error_code="invalid_training_file", error_message="bad line 4")
    with pytest.raises(JobFailedError) as failed:
        run_cloud_fine_tune(openai_client(server), request(dataset, tmp_path), Recorder().hooks())
    assert failed.value.code == "invalid_training_file" and failed.value.message == "bad line 4"


def test_azure_deploys_via_arm_or_says_how(server: FakeOpenAIServer, dataset: dict[str, Any], tmp_path: Path) -> None:
    server.state.api_key = KEY
    server.state.arm_token = "arm-token"
    client = FineTuningClient(make_sdk_client("azure", api_key=KEY, azure_endpoint=server.url), "azure")
    arm = ArmTarget("sub", "rg", "acct", "arm-token", base_url=server.url)
    result = run_cloud_fine_tune(client, request(dataset, tmp_path, "azure", azure=AzureServing(endpoint=server.url, arm_target=arm)),
                                 Recorder().hooks())
    assert result.serving_model in server.state.deployments and result.base_url == server.url + "/openai/v1"
    assert "via ARM (Succeeded)" in (result.deployment_note or "")
    assert result.settings["properties"]["voice.llm.api-key"] == "${AZURE_OPENAI_API_KEY}"
    manual = run_cloud_fine_tune(client, request(dataset, tmp_path, "azure", n_epochs=4,
                                                 azure=AzureServing(endpoint=server.url, deployment_name="mine")),
                                 Recorder().hooks())
    assert manual.serving_model == "mine" and "az cognitiveservices" in (manual.deployment_note or "")
