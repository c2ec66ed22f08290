"""A local OpenAI-compatible fine-tuning API for tests (no network): files, jobs, events, checkpoints,
result files, chat completions, and Azure's ARM deployments.

Responses are shaped like the real API so the real ``openai`` SDK parses them (openai 3.x talks
httpx2, which httpx mocking libraries do not intercept, hence a real server on 127.0.0.1).
The server is *scriptable*: each ``GET /fine_tuning/jobs/{id}`` advances the job one status along
its script (``validating_files -> queued -> running -> succeeded`` by default), so a test decides
exactly how many polls a job takes; jobs can be scripted to fail, requests to get 429/500, and the
server can be stopped and restarted on the same port with its state kept (like the real service).
It serves both the OpenAI layout (``/v1/...``) and the Azure layout (``/openai/...``).
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from mrdabak_pipeline.core.domain import assistant_target

DEFAULT_SCRIPT = ("validating_files", "queued", "running", "running", "succeeded")
RESOLVED_AUTO = {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8, "beta": 0.1}
ChatReply = Callable[[str, list[dict[str, Any]]], str]


def default_reply(model: str, messages: list[dict[str, Any]]) -> str:
    return assistant_target("네, 스테이크 디너로 도와드릴게요. 몇 인분 드릴까요?", {"dinnerType": "valentine"})


@dataclass
class Fault:
    status: int
    remaining: int
    path_contains: str | None = None
    method: str | None = None


@dataclass
class JobScript:
    """The statuses a job walks through (one per retrieve) and, for 'failed', its error."""

    statuses: tuple[str, ...] = DEFAULT_SCRIPT
    error_code: str = "invalid_training_file"
    error_message: str = "The training file has 3 lines without a 'messages' key."


@dataclass
class FakeState:
    """Everything the server knows; survives restarts. Tests read it to count jobs and uploads."""

    api_key: str | None = None
    arm_token: str | None = None
    result_base64: bool = True
    chat_reply: ChatReply = default_reply
    check_chat_model: bool = True
    default_script: JobScript = field(default_factory=JobScript)
    next_scripts: list[JobScript] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    file_content: dict[str, bytes] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: dict[str, list[Any]] = field(default_factory=dict)  # job id -> [script, position]
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    checkpoints: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: GET /models: id -> extra fields (OpenAI ``shutdown_date``; Azure ``deprecation``/``capabilities``).
    #: An id missing here is a 404, like a model the organisation cannot see; None = every id exists.
    models: dict[str, dict[str, Any]] | None = None
    jobs_blocked: bool = False  # POST /fine_tuning/jobs answers 403 (OpenAI's self-serve restrictions)
    #: called inside POST /fine_tuning/jobs once the job exists, before the answer leaves (tests stop the run here)
    after_create: Callable[[dict[str, Any]], None] | None = None
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    chat_requests: list[dict[str, Any]] = field(default_factory=list)
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    lock: threading.RLock = field(default_factory=threading.RLock)

    def inject(self, status: int, count: int = 1, path_contains: str | None = None, method: str | None = None) -> None:
        """The next ``count`` matching requests answer ``status`` (429 and 5xx carry retry-after-ms)."""
        with self.lock:
            self.faults.append(Fault(status, count, path_contains, method))

    def script_next_job(self, *statuses: str, error_code: str | None = None, error_message: str | None = None) -> None:
        """The next created job walks ``statuses`` (e.g. ``"validating_files", "failed"``)."""
        script = JobScript(statuses=statuses or DEFAULT_SCRIPT)
        if error_code:
            script.error_code = error_code
        if error_message:
            script.error_message = error_message
        with self.lock:
            self.next_scripts.append(script)

    @property
    def jobs_created(self) -> int:
        return len(self.jobs)

    @property
    def uploads(self) -> int:
        return sum(1 for f in self.files.values() if f["purpose"] == "fine-tune")

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.counter):06d}fake"


def _error(status: int, message: str, code: str | None = None, type_: str = "invalid_request_error") -> JSONResponse:
    headers = {"retry-after-ms": "5"} if status == 429 or status >= 500 else {}
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _page(items: list[dict[str, Any]], request: Request, default_limit: int = 20) -> dict[str, Any]:
    """Cursor pagination like the real API: newest first, ``after`` = last id seen, ``has_more``."""
    after = request.query_params.get("after")
    limit = int(request.query_params.get("limit", default_limit))
    if after:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}


#: Keywords OpenAI's strict structured outputs refused (and some API versions still refuse).
STRICT_UNSUPPORTED = ("pattern", "format", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems")


def strict_schema_errors(schema: Any, path: str = "$") -> list[str]:
    """What the real API answers 400 to in a ``"strict": true`` json_schema response_format:
    an object must list every property as required and set additionalProperties to false, and
    the value-bound keywords above are refused."""
    if not isinstance(schema, dict):
        return []
    errors = [f"{path}: '{kw}' is not supported in strict mode" for kw in STRICT_UNSUPPORTED if kw in schema]
    props = schema.get("properties")
    if isinstance(props, dict):
        if schema.get("additionalProperties") is not False:
            errors.append(f"{path}: additionalProperties must be false")
        if sorted(schema.get("required") or []) != sorted(props):
            errors.append(f"{path}: 'required' must list every property")
        for key, sub in props.items():
            errors += strict_schema_errors(sub, f"{path}.{key}")
    errors += strict_schema_errors(schema.get("items"), f"{path}[]")
    return errors


def _parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, bytes), with the stdlib (no python-multipart dependency)."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts: dict[str, tuple[str | None, bytes]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        parts[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return parts


def training_file_errors(data: bytes, method: str) -> list[str]:
    """What the real API's file validation fails a job for: every line must fit the method's format.

    supervised: ``{"messages": [...]}``; dpo: ``{"input": {"messages": [...]}, "preferred_output":
    [assistant msg], "non_preferred_output": [assistant msg]}`` (OpenAI DPO guide).
    """
    errors: list[str] = []
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            errors.append(f"line {n}: not JSON")
            continue
        if method == "dpo":
            ok = (isinstance((row.get("input") or {}).get("messages"), list)
                  and all(isinstance(row.get(k), list) and row[k] and row[k][0].get("role") == "assistant"
                          for k in ("preferred_output", "non_preferred_output")))
            if not ok:
                errors.append(f"line {n}: a DPO example needs input.messages, preferred_output and non_preferred_output")
        elif not isinstance(row.get("messages"), list):
            errors.append(f"line {n}: no 'messages' key")
    return errors


def build_app(state: FakeState) -> FastAPI:
    """The FastAPI app over ``state`` (a new app per (re)start, the same state)."""
    app = FastAPI()
    api = APIRouter()

    @app.middleware("http")
    async def auth_and_faults(request: Request, call_next: Any) -> Response:
        path = request.url.path
        with state.lock:
            state.requests.append((request.method, path))
            for fault in state.faults:
                if fault.remaining > 0 and (fault.path_contains is None or fault.path_contains in path) and (
                    fault.method is None or fault.method == request.method
                ):
                    fault.remaining -= 1
                    return _error(fault.status, f"injected {fault.status}", type_="server_error")
        if path.startswith("/subscriptions/"):
            if state.arm_token and request.headers.get("authorization") != f"Bearer {state.arm_token}":
                return _error(401, "bad ARM token", "AuthenticationFailed")
        elif state.api_key:
            given = request.headers.get("api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
            if given != state.api_key:
                return _error(401, "Incorrect API key provided.", "invalid_api_key")
        return await call_next(request)

    # ------------------------------------------------------------------ files
    @api.post("/files")
    async def create_file(request: Request) -> Any:
        parts = _parse_multipart(request.headers["content-type"], await request.body())
        if "file" not in parts or "purpose" not in parts:
            return _error(400, "file and purpose are required")
        filename, data = parts["file"]
        purpose = parts["purpose"][1].decode()
        with state.lock:
            fid = state.new_id("file")
            obj = {
                "id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename or "upload.jsonl", "purpose": purpose, "status": "processed",
                "expires_at": None, "status_details": None,
            }
            state.files[fid] = obj
            state.file_content[fid] = data
        return obj

    @api.get("/files")
    async def list_files(request: Request) -> Any:
        purpose = request.query_params.get("purpose")
        with state.lock:
            items = [f for f in reversed(state.files.values()) if purpose is None or f["purpose"] == purpose]
        return _page(items, request, default_limit=10000)

    @api.get("/files/{file_id}")
    async def get_file(file_id: str) -> Any:
        return state.files.get(file_id) or _error(404, f"No such File object: {file_id}")

    @api.get("/files/{file_id}/content")
    async def file_content(file_id: str) -> Any:
        if file_id not in state.file_content:
            return _error(404, f"No such File object: {file_id}")
        return Response(state.file_content[file_id], media_type="application/octet-stream")

    # ------------------------------------------------------------------ models
    def model_object(model_id: str) -> dict[str, Any]:
        extra = (state.models or {}).get(model_id) or {}
        return {"id": model_id, "object": "model", "created": 1721260800, "owned_by": "system", **extra}

    @api.get("/models")
    async def list_models() -> Any:
        return {"object": "list", "data": [model_object(m) for m in (state.models or {})]}

    @api.get("/models/{model_id}")
    async def get_model(model_id: str) -> Any:
        if state.models is not None and model_id not in state.models:
            return _error(404, f"The model `{model_id}` does not exist or you do not have access to it.", "model_not_found")
        return model_object(model_id)

    # ------------------------------------------------------------------ jobs
    def add_event(job_id: str, message: str, level: str = "info", data: Any = None, type_: str = "message") -> None:
        events = state.events.setdefault(job_id, [])
        events.append({
            "id": f"ftevent-{job_id}-{len(events):04d}", "object": "fine_tuning.job.event",
            "created_at": int(time.time()), "level": level, "message": message, "data": data, "type": type_,
        })

    def resolve_hp(hp: dict[str, Any]) -> dict[str, Any]:
        return {k: (RESOLVED_AUTO[k] if v == "auto" else v) for k, v in hp.items()}

    def finish(job: dict[str, Any]) -> None:
        jid = job["id"]
        hp = resolve_hp(job["hyperparameters"])
        steps = 6
        rows = [(s, round(2.0 / s, 4), round(0.5 + s * 0.07, 4), round(2.2 / s, 4), round(0.45 + s * 0.07, 4))
                for s in range(1, steps + 1)]
        csv = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n" + "".join(
            ",".join(str(v) for v in r) + "\n" for r in rows
        )
        raw = base64.b64encode(csv.encode()) if state.result_base64 else csv.encode()
        rid = state.new_id("file")
        state.files[rid] = {
            "id": rid, "object": "file", "bytes": len(raw), "created_at": int(time.time()),
            "filename": "step_metrics.csv", "purpose": "fine-tune-results", "status": "processed",
        }
        state.file_content[rid] = raw
        suffix = job.get("user_provided_suffix") or "ft"
        model_id = f"ft:{job['model']}:mrdabak-test:{suffix}:{jid[-10:-4]}"
        tokens = state.files[job["training_file"]]["bytes"] // 4 * int(hp["n_epochs"])
        job.update(status="succeeded", fine_tuned_model=model_id, finished_at=int(time.time()),
                   result_files=[rid], trained_tokens=tokens, estimated_finish=None)
        state.checkpoints[jid] = [
            {"id": f"ftckpt-{jid}-{s}", "object": "fine_tuning.job.checkpoint", "created_at": int(time.time()),
             "fine_tuned_model_checkpoint": f"{model_id}:ckpt-step-{s}", "fine_tuning_job_id": jid,
             "step_number": s, "metrics": {"step": float(s), "train_loss": rows[s - 1][1],
                                           "train_mean_token_accuracy": rows[s - 1][2],
                                           "valid_loss": rows[s - 1][3],
                                           "valid_mean_token_accuracy": rows[s - 1][4]}}
            for s in (2, 4, 6)
        ][::-1]
        add_event(jid, f"New fine-tuned model created: {model_id}")
        add_event(jid, "The job has successfully completed")

    def advance(job: dict[str, Any]) -> None:
        """One retrieve = one step along the script (terminal statuses stay put)."""
        jid = job["id"]
        script, pos = state.progress[jid]
        if job["status"] in ("succeeded", "failed", "cancelled") or pos + 1 >= len(script.statuses):
            return
        pos += 1
        state.progress[jid][1] = pos
        status = script.statuses[pos]
        if status == "succeeded":
            finish(job)
        elif status == "failed":
            job.update(status="failed", finished_at=int(time.time()),
                       error={"code": script.error_code, "message": script.error_message, "param": "training_file"})
            add_event(jid, f"Job failed: {script.error_message}", level="error")
        else:
            if status == "running" and job["status"] != "running":
                # like the real API: "auto" hyperparameters are resolved once training starts
                job["hyperparameters"] = resolve_hp(job["hyperparameters"])
                method = job["method"]
                method[method["type"]]["hyperparameters"] = resolve_hp(method[method["type"]]["hyperparameters"])
                add_event(jid, "Fine-tuning job started")
            elif status == "running":
                step = sum(1 for e in state.events.get(jid, []) if e["type"] == "metrics") + 1
                add_event(jid, f"Step {step}/6: training loss={2.0 / step:.2f}", type_="metrics",
                          data={"step": step, "train_loss": 2.0 / step, "total_steps": 6})
            else:
                add_event(jid, f"Job status: {status}")
            job["status"] = status

    @api.post("/fine_tuning/jobs")
    async def create_job(request: Request) -> Any:
        body = await request.json()
        if state.jobs_blocked:
            return _error(403, "Your organization does not have access to create fine-tuning jobs.", "permission_denied")
        with state.lock:
            if body.get("training_file") not in state.files:
                return _error(400, f"invalid training_file: {body.get('training_file')}", "invalid_training_file")
            vf = body.get("validation_file")
            if vf and vf not in state.files:
                return _error(400, f"invalid validation_file: {vf}", "invalid_validation_file")
            method = body.get("method") or {"type": "supervised", "supervised": {"hyperparameters": {}}}
            for fid in filter(None, (body["training_file"], vf)):
                problems = training_file_errors(state.file_content[fid], method["type"])
                if problems:
                    return _error(400, f"file {fid} is not a valid {method['type']} file: {problems[0]}",
                                  "invalid_training_file")
            hp = dict((method.get(method["type"]) or {}).get("hyperparameters") or body.get("hyperparameters") or {})
            for key in ("n_epochs", "batch_size", "learning_rate_multiplier"):
                hp.setdefault(key, "auto")
            jid = state.new_id("ftjob")
            script = state.next_scripts.pop(0) if state.next_scripts else state.default_script
            job = {
                "id": jid, "object": "fine_tuning.job", "created_at": int(time.time()), "error": None,
                "fine_tuned_model": None, "finished_at": None,
                "hyperparameters": {k: hp[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")},
                "model": body["model"], "organization_id": "org-mrdabak-test", "result_files": [],
                "seed": body.get("seed", 1234), "status": script.statuses[0], "trained_tokens": None,
                "training_file": body["training_file"], "validation_file": vf, "estimated_finish": None,
                "integrations": body.get("integrations") or None,
                "metadata": body.get("metadata"), "user_provided_suffix": body.get("suffix"),
                "method": {"type": method["type"], method["type"]: {"hyperparameters": hp}},
            }
            if "trainingType" in body:  # Azure AI Foundry's training tier (extra_body)
                job["trainingType"] = body["trainingType"]
            state.jobs[jid] = job
            state.progress[jid] = [script, 0]
            add_event(jid, f"Created fine-tuning job: {jid}")
            add_event(jid, f"Validating training file: {body['training_file']}")
        if state.after_create is not None:
            state.after_create(job)
        return job

    @api.get("/fine_tuning/jobs")
    async def list_jobs(request: Request) -> Any:
        wanted = {k[len("metadata["):-1]: v for k, v in request.query_params.items() if k.startswith("metadata[")}
        with state.lock:
            items = [j for j in reversed(state.jobs.values())
                     if all((j.get("metadata") or {}).get(k) == v for k, v in wanted.items())]
        return _page(items, request)

    @api.get("/fine_tuning/jobs/{job_id}")
    async def get_job(job_id: str) -> Any:
        with state.lock:
            job = state.jobs.get(job_id)
            if job is None:
                return _error(404, f"Could not find fine-tune: {job_id}", "fine_tune_not_found")
            advance(job)
            return job

    @api.post("/fine_tuning/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str) -> Any:
        with state.lock:
            job = state.jobs.get(job_id)
            if job is None:
                return _error(404, f"Could not find fine-tune: {job_id}", "fine_tune_not_found")
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return _error(400, f"Job {job_id} has already completed: {job['status']}", "invalid_state")
            job.update(status="cancelled", finished_at=int(time.time()))
            add_event(job_id, "Fine-tuning job cancelled")
            return job

    @api.get("/fine_tuning/jobs/{job_id}/events")
    async def job_events(job_id: str, request: Request) -> Any:
        with state.lock:
            if job_id not in state.jobs:
                return _error(404, f"Could not find fine-tune: {job_id}", "fine_tune_not_found")
            return _page(list(reversed(state.events.get(job_id, []))), request)

    @api.get("/fine_tuning/jobs/{job_id}/checkpoints")
    async def job_checkpoints(job_id: str, request: Request) -> Any:
        with state.lock:
            if job_id not in state.jobs:
                return _error(404, f"Could not find fine-tune: {job_id}", "fine_tune_not_found")
            return _page(list(state.checkpoints.get(job_id, [])), request, default_limit=10)

    # ------------------------------------------------------------------ inference
    async def chat(request: Request, deployment: str | None = None) -> Any:
        body = await request.json()
        model = deployment or body.get("model", "")
        with state.lock:
            state.chat_requests.append({"path": request.url.path, "body": body,
                                        "auth": request.headers.get("authorization") or request.headers.get("api-key")})
            known = {j["fine_tuned_model"] for j in state.jobs.values() if j["fine_tuned_model"]}
            known |= set(state.deployments)
        if state.check_chat_model and (model.startswith("ft:") or deployment is not None) and model not in known:
            return _error(404, f"The model `{model}` does not exist", "model_not_found")
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema") or {}
            problems = ["json_schema needs a name and a schema"] if not spec.get("name") or "schema" not in spec else []
            if spec.get("strict"):
                problems += strict_schema_errors(spec.get("schema"))
            if problems:
                return _error(400, f"Invalid schema for response_format: {problems[0]}", "invalid_json_schema")
        try:
            content = state.chat_reply(model, body.get("messages", []))
        except Exception as exc:
            return _error(500, str(exc), type_="server_error")
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 10, "completion_tokens": max(1, len(content) // 2),
                      "total_tokens": 10 + max(1, len(content) // 2)},
        }

    @api.post("/chat/completions")
    async def chat_openai(request: Request) -> Any:
        return await chat(request)

    @api.post("/deployments/{deployment}/chat/completions")
    async def chat_azure(deployment: str, request: Request) -> Any:
        return await chat(request, deployment)

    app.include_router(api, prefix="/v1")
    app.include_router(api, prefix="/openai")

    # ------------------------------------------------------------------ Azure ARM
    arm = ("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.CognitiveServices/accounts/"
           "{account}/deployments/{name}")

    @app.put(arm)
    async def put_deployment(sub: str, rg: str, account: str, name: str, request: Request) -> Any:
        body = await request.json()
        model = body["properties"]["model"]["name"]
        sku = (body.get("sku") or {}).get("name")
        if sku not in ("standard", "GlobalStandard", "developertier"):
            return _error(400, f"sku {sku!r} is not offered for fine-tuned models", "InvalidResourceProperties")
        with state.lock:
            if not any(j["fine_tuned_model"] == model for j in state.jobs.values()):
                return _error(400, f"model {model} not found", "InvalidResourceProperties")
            dep = {"id": request.url.path, "name": name, "sku": body.get("sku"),
                   "properties": {"model": body["properties"]["model"], "provisioningState": "Creating"}}
            state.deployments[name] = dep
        return JSONResponse(dep, status_code=201)

    @app.get(arm)
    async def get_deployment(sub: str, rg: str, account: str, name: str) -> Any:
        with state.lock:
            dep = state.deployments.get(name)
            if dep is None:
                return _error(404, f"deployment {name} not found", "DeploymentNotFound")
            dep["properties"]["provisioningState"] = "Succeeded"
            return dep

    return app


class FakeOpenAIServer:
    """Runs `build_app` with uvicorn in a thread on 127.0.0.1; ``restart()`` keeps port and state."""

    def __init__(self, state: FakeState | None = None, port: int = 0) -> None:
        self.state = state or FakeState()
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    def start(self) -> FakeOpenAIServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(build_app(self.state), log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def restart(self, down_for_s: float = 0.0) -> None:
        """Go down (connections refused) for ``down_for_s``, then come back with the same state."""
        self.stop()
        time.sleep(down_for_s)
        self.start()


@contextlib.contextmanager
def serve(state: FakeState | None = None) -> Iterator[FakeOpenAIServer]:
    """``with serve() as server:`` a running fake API, stopped afterwards."""
    server = FakeOpenAIServer(state).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def fake_openai_server(reply: ChatReply) -> Iterator[dict[str, Any]]:
    """Chat-only interface (``{"base_url", "requests"}``) of the simpler evaluation test server.

    Lets ``fake_openai_server.py`` be replaced by a re-export of this module: one fake API.
    """
    state = FakeState(chat_reply=reply, check_chat_model=False)
    with serve(state) as server:
        yield {"base_url": server.openai_base_url, "requests": state.chat_requests}
