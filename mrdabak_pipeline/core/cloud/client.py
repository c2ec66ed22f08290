"""The fine-tuning job client over the real ``openai`` SDK: upload once, create once, follow to the end.

"Never pay twice" is enforced in three places:

1. uploads are named after the file's sha256 and looked up before uploading again;
2. every job carries a fingerprint of (dataset hashes + hyperparameters) in its metadata, and a
   job with the same fingerprint that is not failed/cancelled is *attached to* instead of
   creating another (this is also how a retried Dagster run resumes polling the same job);
   backends that do not keep metadata are matched on (uploaded file ids + model + hyperparameters);
3. transient errors (429, 5xx, dropped connections) are retried with backoff by the SDK
   (``max_retries``, honouring ``retry-after``) and, while following a job, by the poll loop,
   so a flaky network never turns into a second job.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from openai.types import FileObject
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

from mrdabak_pipeline.core.cloud.lifecycle import JobCreationRefusedError
from mrdabak_pipeline.core.cloud.results import ResultFileError, parse_result_csv, summarize_curve
from mrdabak_pipeline.core.cloud.spec import META_FINGERPRINT, JobSpec, training_cost_usd, validate_backend
from mrdabak_pipeline.core.runtime.files import sha256_file

SUCCEEDED = "succeeded"
FAILED_STATUSES = frozenset({"failed", "cancelled"})
TERMINAL_STATUSES = FAILED_STATUSES | {SUCCEEDED}
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    openai.APIConnectionError,
    openai.RateLimitError,
    openai.InternalServerError,
)
API_KEY_ENV = {"openai": "OPENAI_API_KEY", "azure": "AZURE_OPENAI_API_KEY"}
DEFAULT_AZURE_API_VERSION = "2025-04-01-preview"


class CloudCredentialsError(RuntimeError):
    """A cloud job was requested without the credentials it needs (names the env var to set)."""


class DatasetChangedError(ValueError):
    """The file on disk no longer has the sha256 its dataset recorded: it is never uploaded under the old hash."""


class JobFailedError(RuntimeError):
    """The job ended failed or cancelled: carries OpenAI's error code and message."""

    def __init__(self, job_id: str, status: str, code: str | None, message: str | None) -> None:
        self.job_id, self.status, self.code, self.message = job_id, status, code, message
        detail = f"{code}: {message}" if code or message else "no error detail from the API"
        super().__init__(f"fine-tuning job {job_id} {status} ({detail})")


def make_sdk_client(
    backend: str,
    *,
    api_key: str | None,
    base_url: str | None = None,
    azure_endpoint: str | None = None,
    api_version: str | None = None,
    max_retries: int = 5,
    timeout_s: float = 120.0,
) -> openai.OpenAI:
    """``OpenAI(...)`` or ``AzureOpenAI(azure_endpoint, api_key, api_version)``; the key must be given.

    The SDK's own retry (exponential backoff with jitter, honouring ``retry-after``) covers 429,
    5xx and connection errors on every call, uploads and job creation included.
    """
    validate_backend(backend)
    if not api_key:
        raise CloudCredentialsError(
            f"no API key for the {backend} backend: set {API_KEY_ENV[backend]} in the environment"
        )
    if backend == "azure":
        if not azure_endpoint:
            raise CloudCredentialsError("the azure backend needs azure_endpoint (AZURE_OPENAI_ENDPOINT)")
        return openai.AzureOpenAI(
            azure_endpoint=azure_endpoint,
            api_key=api_key,
            api_version=api_version or DEFAULT_AZURE_API_VERSION,
            max_retries=max_retries,
            timeout=timeout_s,
        )
    return openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=max_retries, timeout=timeout_s)


@dataclass(frozen=True)
class Upload:
    file_id: str
    filename: str
    sha256: str
    reused: bool


@dataclass
class JobHandle:
    """The job a run is following, and whether it was created by this run or found again."""

    job: FineTuningJob
    attached: bool
    fingerprint: str
    uploads: list[Upload] = field(default_factory=list)


def upload_filename(path: Path, sha256: str) -> str:
    """``train-<sha16>.jsonl``: the content hash in the name is how the upload is found again."""
    return f"{path.stem}-{sha256[:16]}{path.suffix or '.jsonl'}"


def _hp_compatible(wanted: Any, actual: Any) -> bool:
    if wanted == "auto" or wanted is None:
        return True
    try:
        return actual is not None and float(actual) == float(wanted)
    except (TypeError, ValueError):
        return False


def _job_hyperparameters(job: FineTuningJob) -> dict[str, Any]:
    method = job.method
    if method is not None:
        inner = getattr(method, method.type, None)
        hp = getattr(inner, "hyperparameters", None)
        if hp is not None:
            return hp.model_dump()
    return job.hyperparameters.model_dump() if job.hyperparameters is not None else {}


class FineTuningClient:
    """Jobs, files and events of one OpenAI-compatible fine-tuning API (OpenAI or Azure)."""

    def __init__(self, sdk: openai.OpenAI, backend: str = "openai", scan_limit: int = 500) -> None:
        self.sdk = sdk
        self.backend = validate_backend(backend)
        self.scan_limit = scan_limit

    # ---------------------------------------------------------------- files
    def find_upload(self, filename: str, size: int) -> FileObject | None:
        for i, obj in enumerate(self.sdk.files.list(purpose="fine-tune")):
            if i >= self.scan_limit:
                break
            if obj.filename == filename and obj.bytes == size and obj.status != "error":
                return obj
        return None

    def upload(self, path: str | Path, sha256: str | None = None) -> Upload:
        """Upload ``path`` for fine-tuning unless a file with the same content hash is already there.

        The bytes that go up are the bytes hashed here, and that hash must equal ``sha256`` (what the
        dataset asset recorded): a file rewritten since is refused with `DatasetChangedError`, so an
        upload's name always tells the truth about its content.
        """
        path = Path(path)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if sha256 is not None and digest != sha256:
            raise DatasetChangedError(
                f"{path} changed on disk since its dataset was materialized (recorded sha256 {sha256[:12]}, "
                f"now {digest[:12]}): materialize the dataset again; nothing was uploaded"
            )
        name = upload_filename(path, digest)
        existing = self.find_upload(name, len(data))
        if existing is not None:
            return Upload(existing.id, name, digest, reused=True)
        obj = self.sdk.files.create(file=(name, data, "application/jsonl"), purpose="fine-tune")
        return Upload(obj.id, name, digest, reused=False)

    # ---------------------------------------------------------------- jobs
    def iter_jobs(self, metadata: dict[str, str] | None = None) -> Iterable[FineTuningJob]:
        """Jobs newest first; the metadata filter is sent to OpenAI (Azure does not know it)."""
        kwargs: dict[str, Any] = {"limit": 100}
        if metadata and self.backend == "openai":
            kwargs["metadata"] = metadata
        for i, job in enumerate(self.sdk.fine_tuning.jobs.list(**kwargs)):
            if i >= self.scan_limit:
                return
            yield job

    def find_reusable_job(
        self,
        fingerprint: str,
        *,
        spec: JobSpec | None = None,
        training_file: str | None = None,
        validation_file: str | None = None,
    ) -> FineTuningJob | None:
        """A job already paid for: same fingerprint (or, without metadata, same files + hyperparameters).

        Failed and cancelled jobs are skipped; any other status, unknown ones included, counts as
        alive. A succeeded job wins over one still running, newer over older.
        """
        candidates: list[FineTuningJob] = []
        # first pass: server-side metadata filter; second pass (with file ids): a plain scan
        by_request = spec is not None and training_file is not None
        for job in self.iter_jobs(None if by_request else {META_FINGERPRINT: fingerprint}):
            if job.status in FAILED_STATUSES:
                continue
            meta = job.metadata or {}
            if meta.get(META_FINGERPRINT) == fingerprint or (
                META_FINGERPRINT not in meta
                and by_request
                and self._same_request(job, spec, training_file, validation_file)  # type: ignore[arg-type]
            ):
                candidates.append(job)
        if not candidates:
            return None
        return max(candidates, key=lambda j: (j.status == SUCCEEDED, j.created_at))

    @staticmethod
    def _same_request(job: FineTuningJob, spec: JobSpec, training_file: str, validation_file: str | None) -> bool:
        if job.training_file != training_file or (job.validation_file or None) != (validation_file or None):
            return False
        if job.model != spec.model or (job.method is not None and job.method.type != spec.method):
            return False
        if spec.seed is not None and job.seed != spec.seed:
            return False
        actual = _job_hyperparameters(job)
        return all(_hp_compatible(v, actual.get(k)) for k, v in spec.hyperparameters.items())

    def create_or_attach(
        self,
        spec: JobSpec,
        *,
        train_path: str | Path,
        validation_path: str | Path | None,
        train_sha256: str | None = None,
        validation_sha256: str | None = None,
        run_id: str = "manual",
        on_upload: Callable[[Upload], None] | None = None,
    ) -> JobHandle:
        """Attach to the job already running/succeeded for this data+hyperparameters, else create it.

        ``on_upload`` hears of each upload as soon as it exists: if the run is stopped while the
        job is being created, the caller can still find that job (by these file ids) and cancel it.
        """
        train_sha = train_sha256 or sha256_file(train_path)
        valid_sha = validation_sha256 or (sha256_file(validation_path) if validation_path else None)
        fingerprint = spec.fingerprint(train_sha, valid_sha)
        existing = self.find_reusable_job(fingerprint)
        if existing is not None:
            return JobHandle(existing, attached=True, fingerprint=fingerprint)
        uploads = [self.upload(train_path, train_sha)]
        if on_upload:
            on_upload(uploads[0])
        if validation_path:
            uploads.append(self.upload(validation_path, valid_sha))
            if on_upload:
                on_upload(uploads[1])
        training_file = uploads[0].file_id
        validation_file = uploads[1].file_id if len(uploads) > 1 else None
        existing = self.find_reusable_job(
            fingerprint, spec=spec, training_file=training_file, validation_file=validation_file
        )
        if existing is not None:
            return JobHandle(existing, attached=True, fingerprint=fingerprint, uploads=uploads)
        kwargs: dict[str, Any] = {
            "model": spec.model,
            "training_file": training_file,
            "method": spec.method_payload(),
            "suffix": spec.suffix,
            "metadata": spec.job_metadata(train_sha, valid_sha, run_id),
        }
        if validation_file:
            kwargs["validation_file"] = validation_file
        if spec.seed is not None:
            kwargs["seed"] = spec.seed
        if spec.integrations():
            kwargs["integrations"] = spec.integrations()
        if spec.extra_body():
            kwargs["extra_body"] = spec.extra_body()
        try:
            job = self.sdk.fine_tuning.jobs.create(**kwargs)
        except openai.PermissionDeniedError as exc:
            raise JobCreationRefusedError(
                f"the {self.backend} API refused to create a fine-tuning job for this organisation/resource "
                f"(HTTP 403: {exc.message}). OpenAI blocks organisations without recent fine-tuning use since "
                "2026-05-07/2026-07-02 and everyone from 2027-01-06: use backend 'azure' or 'local'. "
                "The uploads are kept and reused on the next try."
            ) from exc
        except openai.BadRequestError as exc:
            # Older Azure API versions reject `metadata`; the file-id match above still finds the job.
            if self.backend != "azure" or "metadata" not in str(exc):
                raise
            kwargs.pop("metadata")
            job = self.sdk.fine_tuning.jobs.create(**kwargs)
        return JobHandle(job, attached=False, fingerprint=fingerprint, uploads=uploads)

    def retrieve(self, job_id: str) -> FineTuningJob:
        return self.sdk.fine_tuning.jobs.retrieve(job_id)

    def cancel(self, job_id: str) -> FineTuningJob:
        return self.sdk.fine_tuning.jobs.cancel(job_id)

    def list_jobs(self, limit: int = 20) -> list[FineTuningJob]:
        return list(self.sdk.fine_tuning.jobs.list(limit=limit).data)

    def recent_events(self, job_id: str, limit: int = 20) -> list[FineTuningJobEvent]:
        """The latest ``limit`` events, oldest first."""
        events = list(self.sdk.fine_tuning.jobs.list_events(job_id, limit=limit).data)
        return sorted(events, key=lambda e: e.created_at)

    def new_events(self, job_id: str, seen: set[str]) -> list[FineTuningJobEvent]:
        """Events not in ``seen`` (which is updated), oldest first; pages until a known event."""
        fresh: list[FineTuningJobEvent] = []
        page = self.sdk.fine_tuning.jobs.list_events(job_id, limit=100)
        while True:
            hit_seen = False
            for event in page.data:
                if event.id in seen:
                    hit_seen = True
                    continue
                fresh.append(event)
            if hit_seen or not page.has_next_page():
                break
            page = page.get_next_page()
        seen.update(e.id for e in fresh)
        # newest-first pages: reverse, then a stable sort keeps same-second events in order
        return sorted(reversed(fresh), key=lambda e: e.created_at)

    def follow(
        self,
        job_id: str,
        *,
        on_event: Callable[[FineTuningJobEvent], None] = lambda e: None,
        on_status: Callable[[FineTuningJob], None] = lambda j: None,
        on_transient: Callable[[Exception, int], None] = lambda exc, n: None,
        poll_interval_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        max_wait_s: float | None = None,
        max_transient_errors: int = 10,
        seen_events: set[str] | None = None,
    ) -> FineTuningJob:
        """Poll until the job is terminal, streaming new events and status changes to callbacks.

        Unknown statuses are reported and waited through. Transient errors that outlast the SDK's
        retries are retried here with a growing pause, up to ``max_transient_errors`` in a row.
        """
        seen = seen_events if seen_events is not None else set()
        last_status: str | None = None
        failures = 0
        started = time.monotonic()
        while True:
            try:
                job = self.retrieve(job_id)
                events = self.new_events(job_id, seen)
            except TRANSIENT_ERRORS as exc:
                failures += 1
                if failures > max_transient_errors:
                    raise
                on_transient(exc, failures)
                sleep(min(poll_interval_s * 2**failures, 300.0))
                continue
            failures = 0
            for event in events:
                on_event(event)
            if job.status != last_status:
                last_status = job.status
                on_status(job)
            if job.status in TERMINAL_STATUSES:
                return job
            if max_wait_s is not None and time.monotonic() - started > max_wait_s:
                raise TimeoutError(f"fine-tuning job {job_id} still {job.status} after {max_wait_s:.0f}s")
            sleep(poll_interval_s)

    # ---------------------------------------------------------------- results
    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """Checkpoints with their metrics, by step (empty where the backend has none)."""
        try:
            items = list(self.sdk.fine_tuning.jobs.checkpoints.list(job_id, limit=100))
        except openai.NotFoundError:
            return []
        rows = []
        for cp in sorted(items, key=lambda c: c.step_number):
            row: dict[str, Any] = {"step": cp.step_number, "model": cp.fine_tuned_model_checkpoint}
            row.update({k: v for k, v in cp.metrics.model_dump().items() if k != "step"})
            rows.append(row)
        return rows

    def result_curve(self, job: FineTuningJob) -> tuple[list[dict[str, Any]], str | None]:
        """(per-step metric rows, error text) from the job's result file(s)."""
        if not job.result_files:
            return [], "the job has no result file"
        try:
            raw = self.sdk.files.content(job.result_files[0]).content
            return parse_result_csv(raw), None
        except (ResultFileError, openai.NotFoundError) as exc:
            return [], f"result file {job.result_files[0]} unreadable: {exc}"

    def outcome(self, job: FineTuningJob) -> dict[str, Any]:
        """Everything worth keeping about a succeeded job; raises `JobFailedError` otherwise."""
        if job.status != SUCCEEDED:
            error = job.error
            raise JobFailedError(
                job.id,
                job.status,
                getattr(error, "code", None),
                getattr(error, "message", None),
            )
        rows, curve_error = self.result_curve(job)
        return {
            "job_id": job.id,
            "status": job.status,
            "model_id": job.fine_tuned_model,
            "base_model": job.model,
            "trained_tokens": job.trained_tokens,
            "actual_cost_usd": training_cost_usd(job.model, job.trained_tokens),
            "hyperparameters": _job_hyperparameters(job),
            "checkpoints": self.checkpoints(job.id),
            "curve": rows,
            "curve_summary": summarize_curve(rows),
            "curve_error": curve_error,
            "created_at": job.created_at,
            "finished_at": job.finished_at,
        }


@contextlib.contextmanager
def retries_logged(sdk: openai.OpenAI, log: Callable[[str], None]) -> Iterator[None]:
    """Report every retry the SDK makes (status, request, wait) while the block runs.

    The SDK retries 429/5xx/connection errors itself and says so only on its own logger, without
    the status; a rate-limit storm was invisible in the run log. The SDK's retry sleep is
    overridden on this client instance only (and restored after): the same three steps it takes
    (compute the wait honouring ``retry-after``, log, sleep), with the status added.
    """
    calculate = getattr(sdk, "_calculate_retry_timeout", None)
    if calculate is None or not hasattr(sdk, "_sleep_for_retry"):  # an SDK without the hook: nothing to add
        yield
        return

    def sleep_for_retry(*, retries_taken: int, max_retries: int, options: Any, response: Any) -> None:
        wait = calculate(max_retries - retries_taken, options, response.headers if response is not None else None)
        status = f"HTTP {response.status_code}" if response is not None else "connection error"
        log(f"API retry {retries_taken + 1}/{max_retries}: {str(options.method).upper()} {options.url} -> "
            f"{status}, waiting {wait:.2f}s")
        time.sleep(wait)

    sdk._sleep_for_retry = sleep_for_retry  # type: ignore[method-assign]
    try:
        yield
    finally:
        del sdk._sleep_for_retry  # back to the class's method


def describe_job(job: FineTuningJob) -> dict[str, Any]:
    """A flat, printable summary (the CLI's ``list``/``check`` rows)."""
    return {
        "id": job.id,
        "status": job.status,
        "model": job.model,
        "fine_tuned_model": job.fine_tuned_model,
        "trained_tokens": job.trained_tokens,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "error": f"{job.error.code}: {job.error.message}" if job.error and job.error.code else None,
    }
