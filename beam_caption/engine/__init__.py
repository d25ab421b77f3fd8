"""The per-process request engine: one event loop and one aiohttp session per worker process,
the attempt loop, and its policies beside it (pacing, spend cap, answer memory, stops), plus the
process-wide resources they share (loop threads, metrics, progress).
"""
