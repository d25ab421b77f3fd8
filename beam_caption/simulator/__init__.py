"""A local OpenAI-compatible server: the endpoint the demo, tests and benchmarks run against.

It implements what beam-caption depends on, at least as strictly as the real API: chat completions
with image inputs (validation, usage by the published token rules, synthetic captions derived from
each image), bearer auth, rate limits with retry hints, seeded fault injection, the Batch API and a
ledger of everything billed (GET /_sim/stats). Captions are synthetic: they describe brightness,
orientation, colours and size, not the picture's content.

Modules: config (options), app (routes, middleware), chat (realtime endpoint), completion
(one computed answer), validation, images, captions, structured (response_format), usage,
ratelimit, state, ledger, files, batch, batch_lines, wire (JSON), runner (start/stop), cli.
"""

from beam_caption.simulator.runner import (
    SimulatorHandle,
    running_simulator,
    running_simulator_process,
)
from beam_caption.simulator.settings import SimulatorConfig

__all__ = ["SimulatorConfig", "SimulatorHandle", "running_simulator",
           "running_simulator_process"]
