"""The aiohttp application: routes, the middleware every request passes, and /_sim/ control.

The middleware checks the key on /v1/* and /v1beta/* (bearer, x-api-key or x-goog-api-key, by
dialect: dialects.py), turns SimError (and aiohttp's own 404/405/413) into the error shape of the
request's dialect, stamps the dialect's request-id and rate-limit headers on every response,
and counts and logs each request. /_sim/stats, /_sim/reset and /_sim/config are the test
harness's side door: no key needed, but only loopback clients may use it.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from beam_caption.errors import ConfigError
from beam_caption.loopback import is_loopback_host
from beam_caption.simulator import (
    batch,
    dialects,
    files,
    gemini,
    gemini_batch,
    messages,
    messages_batch,
)
from beam_caption.simulator.apierror import SimError, bad_request, unauthorized
from beam_caption.simulator.chat import RECORD, RequestRecord, chat_completions
from beam_caption.simulator.settings import SimulatorConfig
from beam_caption.simulator.state import STATE, SimState
from beam_caption.simulator.wire import json_response, read_json

CHAT_PATH = "/v1/chat/completions"
# Requests up to 64 MB: the API takes up to 50 MB of images per request, plus text.
MAX_REQUEST_BYTES = 64 * 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _check_auth(request: web.Request, key: str | None) -> None:
    if key is None:
        return
    header = request.headers.get("Authorization", "")
    if not header:
        raise SimError(401, "You didn't provide an API key. You need to provide your API key in "
                       "an Authorization header using Bearer auth (i.e. Authorization: Bearer "
                       "YOUR_KEY).", outcome="unauthorized")
    scheme, _, sent = header.partition(" ")
    # Compare in constant time; the message never echoes what was sent.
    if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(),
                                                             key.encode()):
        raise unauthorized("Incorrect API key provided. You can find your API key at "
                           "https://platform.openai.com/account/api-keys.")


def _rendered(path: str, error: SimError) -> tuple[dict, int, dict[str, str]]:
    """(body, status, headers) of an error, in the dialect of `path`."""
    status, body, headers = dialects.render_error(path, error)
    return body, status, headers


def _from_http(request: web.Request, exc: web.HTTPException) -> SimError:
    if exc.status == 413:
        return SimError(413, "Request too large: the simulator accepts request bodies up to "
                        f"{MAX_REQUEST_BYTES} bytes.", code="request_too_large")
    if exc.status in (404, 405):
        return SimError(404, f"Invalid URL ({request.method} {request.path})",
                        outcome="not_found")
    return SimError(exc.status, exc.reason or "Request failed.", outcome="bad_request")


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Auth, error shape, standard headers, ledger and log (see the module docstring)."""
    state = request.app[STATE]
    started = time.perf_counter()
    arrived = time.time()
    record = request[RECORD] = RequestRecord()
    try:
        if dialects.dialect(request.path) != dialects.OPENAI:
            dialects.check_key(request, state.config.api_key)
        elif request.path.startswith("/v1/"):
            _check_auth(request, state.config.api_key)
        elif request.path.startswith("/_sim/") and not is_loopback_host(request.remote or ""):
            # The control door needs no key, so it only opens to this machine.
            raise SimError(403, "/_sim/ is reachable from loopback only.", code="forbidden")
        response = await handler(request)
    except (SimError, web.HTTPException) as exc:
        error = exc if isinstance(exc, SimError) else _from_http(request, exc)
        record.outcome = error.outcome
        response = json_response(*_rendered(request.path, error))
    except asyncio.CancelledError:
        # The client hung up before the answer (e.g. its timeout fired): nothing is billed.
        if record.outcome == "ok":
            record.outcome = "timeout"
        _account(state, request, record, None, started, arrived)
        raise
    headers = response.headers
    headers.update(dialects.request_id_header(request.path))
    if dialects.dialect(request.path) == dialects.OPENAI:
        headers["openai-processing-ms"] = str(int((time.perf_counter() - started) * 1000))
    headers.update(dialects.limit_headers(request.path, state.limiter, time.monotonic(),
                                          time.time()))
    dropped = record.outcome in ("timeout", "disconnect")
    _account(state, request, record, None if dropped else response.status, started,
             arrived)
    return response


def _account(state: SimState, request: web.Request, record: RequestRecord,
             status: int | None, started: float, arrived: float) -> None:
    if dialects.is_realtime(request.path):
        state.ledger.count(record.outcome)
    if dialects.is_api(request.path):
        state.log.write(request.path, status if status is not None else 0, record.outcome,
                        record.model, record.body, record.usage,
                        (time.perf_counter() - started) * 1000, arrived)


async def sim_stats(request: web.Request) -> web.Response:
    """GET /_sim/stats: the ledger."""
    return json_response(request.app[STATE].ledger.snapshot())


async def sim_reset(request: web.Request) -> web.Response:
    """POST /_sim/reset: zero the ledger (rate-limit windows are left alone)."""
    request.app[STATE].ledger.reset()
    return json_response({"reset": True})


async def sim_config(request: web.Request) -> web.Response:
    """GET /_sim/config shows the config; POST applies runtime changes and shows the result."""
    state = request.app[STATE]
    if request.method == "POST":
        changes = await read_json(request)
        if not isinstance(changes, dict):
            raise bad_request("expected a JSON object of option: value")
        try:
            state.update(changes)
        except (ConfigError, TypeError, ValueError) as exc:
            raise bad_request(str(exc)) from None
    data = state.config.to_dict()
    data["api_key"] = None if state.config.api_key is None else "***"  # never echo the key
    return json_response(data)


async def list_models(request: web.Request) -> web.Response:
    """GET /v1/models: the served model ids."""
    return json_response({"object": "list", "data": [
        {"id": m, "object": "model", "created": 0, "owned_by": "beam-caption-simulator"}
        for m in sorted(request.app[STATE].models)]})


def build_app(config: SimulatorConfig) -> web.Application:
    """A ready-to-run application for `config` (prices are loaded here, once)."""
    app = web.Application(middlewares=[api_middleware], client_max_size=MAX_REQUEST_BYTES)
    app[STATE] = SimState(config)
    app[files.FILES] = files.FileStore()
    app[batch.BATCHES] = batch.BatchStore()
    app.router.add_post(CHAT_PATH, chat_completions)
    app.router.add_post(dialects.MESSAGES_PATH, messages.create_message)
    app.router.add_post("/v1beta/models/{model}:generateContent", gemini.generate_content)
    app[messages_batch.MESSAGE_BATCHES] = messages_batch.MessageBatchStore()
    app[gemini_batch.GEMINI_BATCHES] = gemini_batch.GeminiBatchStore()
    app.router.add_post("/v1/messages/batches", messages_batch.create)
    app.router.add_get("/v1/messages/batches/{batch_id}", messages_batch.retrieve)
    app.router.add_post("/v1/messages/batches/{batch_id}/cancel", messages_batch.cancel)
    app.router.add_get("/v1/messages/batches/{batch_id}/results", messages_batch.results)
    app.router.add_post("/v1beta/models/{model}:batchGenerateContent", gemini_batch.create)
    app.router.add_get("/v1beta/batches", gemini_batch.list_batches)
    app.router.add_get("/v1beta/batches/{id}", gemini_batch.retrieve)
    app.router.add_post("/v1beta/batches/{id}:cancel", gemini_batch.cancel)
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/files", files.upload)
    app.router.add_get("/v1/files/{file_id}", files.retrieve)
    app.router.add_get("/v1/files/{file_id}/content", files.content)
    app.router.add_post("/v1/batches", batch.create)
    app.router.add_get("/v1/batches", batch.list_batches)
    app.router.add_get("/v1/batches/{batch_id}", batch.retrieve)
    app.router.add_post("/v1/batches/{batch_id}/cancel", batch.cancel)
    app.router.add_get("/_sim/stats", sim_stats)
    app.router.add_post("/_sim/reset", sim_reset)
    app.router.add_route("*", "/_sim/config", sim_config)
    app.on_cleanup.append(_cleanup)
    return app


async def _cleanup(app: web.Application) -> None:
    for store in (app[batch.BATCHES], app[messages_batch.MESSAGE_BATCHES],
                  app[gemini_batch.GEMINI_BATCHES]):
        for job in store.values():
            if job.task is not None:
                job.task.cancel()
    await app[STATE].close()
