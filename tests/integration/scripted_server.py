"""A scripted in-process chat-completions server for tests that drive the engine directly: it
answers from a script (then 200s) and records what arrived when."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from beam_caption.engine.loop import LoopThread


def answer(text: str = "A cat.", prompt: int = 100, completion: int = 10) -> dict[str, Any]:
    """A chat completion's JSON body."""
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}}


@dataclass
class Reply:
    """One scripted answer: status, JSON body, headers, and how long to take."""

    status: int = 200
    body: Any = field(default_factory=answer)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class ScriptedServer:
    """Answers POST /v1/chat/completions from a script (then 200s); records what arrived when."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.default = Reply()
        self.received: list[tuple[float, dict[str, Any]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        """The one route."""
        self.received.append((time.monotonic(), await request.json()))
        reply = self.script.pop(0) if self.script else self.default
        await asyncio.sleep(reply.delay_s)
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)


@contextlib.contextmanager
def serving(scripted: ScriptedServer) -> Iterator[str]:
    """Serve `scripted` on 127.0.0.1 from a loop thread of its own; yields the base URL."""
    thread = LoopThread("scripted-server")

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", scripted.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = thread.run(start(), timeout=10)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        thread.run(runner.cleanup(), timeout=10)
        thread.stop()
