"""beam-caption: caption huge image collections with vision-language models on Apache Beam.

The public Python API, for composing the steps into your own pipeline (README: "In your own Beam
pipeline"); these names are stable:

    from beam_caption import (CaptionConfig, CaptionImages, ExpandInputs, PrepareImages,
                              PrepareSettings, FetchSettings, WriteCaptions)

    config = CaptionConfig.create(model="gpt-5.4-nano", prompt="...", output="out/run1")
    refs = pipeline | ExpandInputs(["photos/*.jpg"])
    prepared = refs | PrepareImages(PrepareSettings(max_side=512), FetchSettings(),
                                    run_id=config.run_id)
    captioned = prepared.images | CaptionImages(config)
    (captioned.captions, errors) | WriteCaptions("out/run1", config)

Names are imported on first use, so `import beam_caption` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "CaptionConfig": "beam_caption.config",
    "EndpointConfig": "beam_caption.engine.settings",
    "LimitsConfig": "beam_caption.engine.settings",
    "RequestSettings": "beam_caption.api.request",
    "PrepareSettings": "beam_caption.inputs.images",
    "PreparedImage": "beam_caption.inputs.images",
    "FetchSettings": "beam_caption.inputs.fetch",
    "ImageRef": "beam_caption.inputs.refs",
    "ExpandInputs": "beam_caption.inputs.sources",
    "PrepareImages": "beam_caption.pipeline.prepare",
    "CaptionImages": "beam_caption.pipeline.caption",
    "WriteCaptions": "beam_caption.pipeline.sinks",
    "ModelPrice": "beam_caption.cost.pricing",
    "load_prices": "beam_caption.cost.pricing",
    "CAPTIONS_SCHEMA": "beam_caption.pipeline.schema",
    "ERRORS_SCHEMA": "beam_caption.pipeline.schema",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'beam_caption' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
