"""Shared test set-up: nothing here may reach beyond loopback."""

from __future__ import annotations

import os

# google-auth would otherwise probe the GCE metadata server (not a loopback address).
os.environ.setdefault("NO_GCE_CHECK", "true")
