"""Choosing and running the Beam runner: the number of worker processes that share the limits,
local runs on FnApiRunner with worker processes that survive Ctrl-C, the launcher's answer to
Ctrl-C, and worker log relaying.
"""
