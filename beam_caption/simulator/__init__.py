"""A local OpenAI-compatible server: the endpoint the demo, tests and benchmarks run against.

It implements what beam-caption depends on, at least as strictly as the real API: chat completions
with image inputs (validation, usage by the published token rules, synthetic captions derived from
each image), bearer auth, rate limits with retry hints, seeded fault injection, the Batch API and a
ledger of everything billed (GET /_sim/stats). Captions are synthetic: they describe brightness,
orientation, colours and size, not the picture's content.

Modules: settings (SimulatorConfig), app (routes, middleware), chat (realtime endpoint),
completion (one computed answer), validation (request -> ChatRequest), image_parts (decode and
analyse images), captions, json_answers (response_format), usage, ratelimit, state, ledger,
apierror (SimError, the error answers), stores (objects by id), files, batch, batch_lines, wire
(JSON), runner (start, stop, serve), __main__ (the child process of running_simulator_process).
The `beam-caption simulate` command is beam_caption/cli/simulate.py.
"""

from beam_caption.simulator.runner import (
    SimulatorHandle,
    running_simulator,
    running_simulator_process,
)
from beam_caption.simulator.settings import SimulatorConfig

__all__ = ["SimulatorConfig", "SimulatorHandle", "running_simulator",
           "running_simulator_process"]
