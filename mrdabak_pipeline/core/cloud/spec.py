"""What a cloud fine-tuning job *is*: validated hyperparameters, its fingerprint, cost and app settings.

Everything here is decided before a single byte is uploaded, so a typo in the suffix or an
out-of-range epoch count fails in milliseconds instead of after a paid upload. The fingerprint
(dataset hashes + every hyperparameter) is what lets a retried run find the job it already paid
for: it is written into the job's metadata at creation and looked up before creating another.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

Backend = Literal["openai", "azure"]
BACKENDS: tuple[str, ...] = ("openai", "azure")
DEFAULT_BASE_MODEL = "gpt-4o-mini-2024-07-18"
OPENAI_BASE_URL = "https://api.openai.com/v1"

# OpenAI documents "up to 64 characters"; Azure OpenAI caps the suffix at 18. Both only accept
# letters, digits, '-' and '_' (anything else is rejected by the API after the upload was paid for).
SUFFIX_MAX_LEN: dict[str, int] = {"openai": 64, "azure": 18}
DEFAULT_SUFFIX: dict[str, str] = {"openai": "mrdabak-voice-order", "azure": "mrdabak-voice"}
_SUFFIX_RE = re.compile(r"^[A-Za-z0-9_-]+$")

# Metadata keys written on every job we create (OpenAI: <=16 keys, key <=64, value <=512 chars).
META_FINGERPRINT = "mrdabak_fingerprint"
META_TRAIN_SHA = "mrdabak_train_sha256"
META_VALID_SHA = "mrdabak_validation_sha256"
META_RUN_ID = "mrdabak_run_id"
META_PIPELINE = "mrdabak_pipeline"

# Training price in USD per 1M trained tokens (OpenAI price list, 2025). Longest prefix wins, so
# dated snapshots fall back to their family. Azure bills training per hour instead: its figure is
# an estimate of the same token volume at OpenAI's price, flagged as such in metadata. One model family a line.
TRAINING_PRICE_PER_1M: dict[str, float] = {
    "gpt-4o-mini": 3.00, "gpt-4o": 25.00,
    "gpt-4.1-nano": 1.50, "gpt-4.1-mini": 5.00, "gpt-4.1": 25.00,
    "gpt-3.5-turbo": 8.00, "gpt-35-turbo": 8.00,  # OpenAI's spelling, Azure's
}

# Azure spells some base models differently from OpenAI.
_AZURE_MODEL_NAMES: dict[str, str] = {
    "gpt-3.5-turbo": "gpt-35-turbo",
    "gpt-3.5-turbo-0125": "gpt-35-turbo-0125",
    "gpt-3.5-turbo-1106": "gpt-35-turbo-1106",
    "gpt-3.5-turbo-0613": "gpt-35-turbo-0613",
}

Auto = Literal["auto"]
HParam = int | float | str

#: Azure AI Foundry training types, sent as ``extra_body={"trainingType": ...}`` on job creation
#: (Microsoft Learn, "Customize a model with the Foundry Python SDK": "Other options are
#: `Standard` and `Developer`"). Global Standard is the cheaper, faster-queuing tier but copies
#: data and weights out of the resource's region; Standard keeps them in-region; Developer is the
#: cheapest and carries no SLA. None: the API's default for the model.
AZURE_TRAINING_TYPES: dict[str, str] = {"standard": "Standard", "global_standard": "GlobalStandard", "developer": "Developer"}


class CloudSpecError(ValueError):
    """A job specification the API would reject: raised before anything is uploaded."""


def validate_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise CloudSpecError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def validate_suffix(suffix: str | None, backend: str) -> str:
    """The model-name suffix, or the backend default when None; raises with the exact rule broken."""
    validate_backend(backend)
    if suffix is None:
        return DEFAULT_SUFFIX[backend]
    limit = SUFFIX_MAX_LEN[backend]
    if not suffix:
        raise CloudSpecError("suffix must not be empty")
    if len(suffix) > limit:
        raise CloudSpecError(f"suffix {suffix!r} has {len(suffix)} characters; {backend} allows at most {limit}")
    if not _SUFFIX_RE.match(suffix):
        bad = sorted({c for c in suffix if not (c.isascii() and (c.isalnum() or c in "-_"))})
        raise CloudSpecError(f"suffix {suffix!r} may only use letters, digits, '-' and '_' (found {bad})")
    return suffix


def parse_hparam(
    value: HParam | None, name: str, *, integer: bool, low: float, high: float
) -> int | float | Auto:
    """``"auto"`` or a number within [low, high]; numeric strings ("3", "0.1") are accepted.

    Config from the Dagster UI or the CLI arrives as text, so "3" must mean 3; "auto" lets the API
    choose from the dataset size, which is its documented default.
    """
    if value is None:
        return "auto"
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        try:
            number: float = float(text)
        except ValueError:
            raise CloudSpecError(f"{name} must be a number or 'auto', got {value!r}") from None
    elif isinstance(value, bool):
        raise CloudSpecError(f"{name} must be a number or 'auto', got {value!r}")
    else:
        number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise CloudSpecError(f"{name} must be within [{low}, {high}] or 'auto', got {value!r}")
    if integer:
        if number != int(number):
            raise CloudSpecError(f"{name} must be a whole number or 'auto', got {value!r}")
        return int(number)
    return number


@dataclass(frozen=True)
class JobSpec:
    """One fully validated fine-tuning request (independent of the dataset)."""

    backend: str
    model: str
    method: str
    n_epochs: int | Auto
    batch_size: int | Auto
    learning_rate_multiplier: float | Auto
    beta: float | Auto | None
    seed: int | None
    suffix: str
    wandb_project: str | None = None
    training_type: str | None = None  # Azure only: a value of AZURE_TRAINING_TYPES (None: API default)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        hp: dict[str, Any] = {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }
        if self.method == "dpo":
            hp["beta"] = self.beta if self.beta is not None else "auto"
        return hp

    def method_payload(self) -> dict[str, Any]:
        """The ``method=`` argument of ``client.fine_tuning.jobs.create``."""
        return {"type": self.method, self.method: {"hyperparameters": self.hyperparameters}}

    def extra_body(self) -> dict[str, Any] | None:
        """Fields the SDK does not model: Azure's ``trainingType``."""
        return {"trainingType": self.training_type} if self.training_type else None

    def integrations(self) -> list[dict[str, Any]] | None:
        if not self.wandb_project:
            return None
        return [{"type": "wandb", "wandb": {"project": self.wandb_project, "tags": ["mrdabak"]}}]

    def fingerprint(self, train_sha256: str, validation_sha256: str | None) -> str:
        """Same data + same hyperparameters => same fingerprint => the same (already paid) job."""
        payload = {k: v for k, v in asdict(self).items() if k != "wandb_project"}
        if payload["training_type"] is None:  # absent = the fingerprints of jobs made before the field existed
            del payload["training_type"]
        payload["train_sha256"] = train_sha256
        payload["validation_sha256"] = validation_sha256 or ""
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def job_metadata(self, train_sha256: str, validation_sha256: str | None, run_id: str) -> dict[str, str]:
        return {
            META_FINGERPRINT: self.fingerprint(train_sha256, validation_sha256),
            META_TRAIN_SHA: train_sha256,
            META_VALID_SHA: validation_sha256 or "",
            META_RUN_ID: run_id[:512],
            META_PIPELINE: "mrdabak_pipeline",
        }


#: `build_job_spec`'s options besides the backend: the settings that make the job (and its fingerprint),
#: which a Dagster config or a CLI passes through as they are.
JOB_SPEC_OPTIONS: tuple[str, ...] = (
    "model", "method", "n_epochs", "batch_size", "learning_rate_multiplier", "beta", "seed", "suffix", "wandb_project",
    "training_type",
)


def job_spec_from(backend: str, settings: Mapping[str, Any]) -> JobSpec:
    """`build_job_spec` on the `JOB_SPEC_OPTIONS` among ``settings`` (a config's dump, a CLI's arguments).

    One list for every caller, so an option added to the spec reaches the asset and the CLI alike;
    whatever else ``settings`` holds (how to follow or deploy the job) is not the spec's.
    """
    return build_job_spec(backend=backend, **{k: settings[k] for k in JOB_SPEC_OPTIONS if k in settings})


def build_job_spec(
    *,
    backend: str = "openai",
    model: str = DEFAULT_BASE_MODEL,
    method: str = "supervised",
    n_epochs: HParam | None = "auto",
    batch_size: HParam | None = "auto",
    learning_rate_multiplier: HParam | None = "auto",
    beta: HParam | None = None,
    seed: int | None = None,
    suffix: str | None = None,
    wandb_project: str | None = None,
    training_type: str | None = None,
) -> JobSpec:
    """Validate every field the API would check, so nothing is uploaded for a doomed job."""
    validate_backend(backend)
    if method not in ("supervised", "dpo"):
        raise CloudSpecError(f"method must be 'supervised' or 'dpo', got {method!r}")
    if not model or not model.strip():
        raise CloudSpecError("model must not be empty")
    if beta is not None and method != "dpo":
        raise CloudSpecError("beta only applies to the 'dpo' method")
    if training_type is not None:
        if backend != "azure":
            raise CloudSpecError("training_type is an Azure AI Foundry setting (the openai backend has none)")
        if training_type not in AZURE_TRAINING_TYPES:
            raise CloudSpecError(f"training_type must be one of {sorted(AZURE_TRAINING_TYPES)}, got {training_type!r}")
    if seed is not None and (isinstance(seed, bool) or not 0 <= int(seed) <= 2_147_483_647):
        raise CloudSpecError(f"seed must be an integer in [0, 2147483647], got {seed!r}")
    return JobSpec(
        backend=backend,
        model=azure_model_name(model) if backend == "azure" else model,
        method=method,
        n_epochs=parse_hparam(n_epochs, "n_epochs", integer=True, low=1, high=50),  # type: ignore[arg-type]
        batch_size=parse_hparam(batch_size, "batch_size", integer=True, low=1, high=256),  # type: ignore[arg-type]
        learning_rate_multiplier=parse_hparam(
            learning_rate_multiplier, "learning_rate_multiplier", integer=False, low=1e-6, high=10.0
        ),
        beta=parse_hparam(beta, "beta", integer=False, low=1e-6, high=2.0) if method == "dpo" else None,
        seed=None if seed is None else int(seed),
        suffix=validate_suffix(suffix, backend),
        wandb_project=wandb_project or None,
        training_type=AZURE_TRAINING_TYPES[training_type] if training_type else None,
    )


def azure_model_name(model: str) -> str:
    """Azure's spelling of an OpenAI base model name (``gpt-3.5-turbo`` -> ``gpt-35-turbo``)."""
    return _AZURE_MODEL_NAMES.get(model, model)


def _price_per_1m(model: str) -> float | None:
    base = model.removeprefix("ft:").split(":")[0]
    matches = [k for k in TRAINING_PRICE_PER_1M if base.startswith(k)]
    return TRAINING_PRICE_PER_1M[max(matches, key=len)] if matches else None


def training_cost_usd(model: str, trained_tokens: int | None) -> float | None:
    """Billable cost of ``trained_tokens`` (tokens x epochs, as the API reports it); None if unknown."""
    price = _price_per_1m(model)
    if price is None or trained_tokens is None:
        return None
    return round(trained_tokens * price / 1_000_000, 6)


def estimated_cost_usd(model: str, dataset: dict[str, Any], n_epochs: int | Auto) -> float | None:
    """Training tokens per epoch x epochs x price; the dataset asset's own estimate otherwise.

    With explicit ``n_epochs`` the estimate is recomputed (the dataset asset assumed its default
    epochs); with ``"auto"`` the dataset's estimate stands, or 3 epochs (the API's small-data choice).
    """
    tokens = dataset.get("train_tokens")
    if isinstance(n_epochs, int) and tokens is not None:
        return training_cost_usd(model, int(tokens) * n_epochs)
    if dataset.get("estimated_cost_usd") is not None:
        return float(dataset["estimated_cost_usd"])
    return training_cost_usd(model, int(tokens) * 3) if tokens is not None else None


def app_settings(
    *,
    backend: str,
    model: str,
    base_url: str | None = None,
    azure_endpoint: str | None = None,
    key_env: str | None = None,
) -> dict[str, Any]:
    """The settings that point the production app at the new model ("no code change").

    ``model`` is the fine-tuned model id (OpenAI) or the deployment name (Azure). The key is
    always a ``${ENV_VAR}`` placeholder: the real secret never leaves the environment.
    """
    validate_backend(backend)
    if backend == "azure":
        if not azure_endpoint:
            raise CloudSpecError("azure_endpoint is needed for the Azure app settings")
        root = azure_endpoint.rstrip("/") + "/openai/v1"
        key_env = key_env or "AZURE_OPENAI_API_KEY"
    else:
        root = (base_url or OPENAI_BASE_URL).rstrip("/")
        key_env = key_env or "OPENAI_API_KEY"
    url = root + "/chat/completions"
    props = {"voice.llm.api-url": url, "voice.llm.model": model, "voice.llm.api-key": f"${{{key_env}}}"}
    env = {"VOICE_LLM_API_URL": url, "VOICE_LLM_MODEL": model, "VOICE_LLM_API_KEY": f"${{{key_env}}}"}
    properties_text = "\n".join(f"{k}={v}" for k, v in props.items())
    env_text = "\n".join(f"export {k}={v}" for k, v in env.items())
    return {"properties": props, "env": env, "properties_text": properties_text, "env_text": env_text}
