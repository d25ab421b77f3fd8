"""Claims on batch shards: which process is submitting a shard now (batches.json records it per
shard, batch/ledger.py merges it like any other field), and whether that process may still be at
it. See batch/ledger.py's docstring for the rule they serve.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from beam_caption.batch.ledger import ShardRecord

# A claim from another machine is taken for dead after this long (its process cannot be seen).
CLAIM_TTL_S = 3600.0
_TOKEN = uuid.uuid4().hex  # this process's claims


def own_claim() -> dict[str, Any]:
    """A claim on a shard by this process, now."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
            "token": _TOKEN}


def is_own(claim: dict[str, Any] | None) -> bool:
    """True for a claim this process made."""
    return bool(claim) and claim.get("token") == _TOKEN and claim.get("pid") == os.getpid()


def released() -> dict[str, Any]:
    """What a claim becomes when its process lets the shard go without a batch (a refused
    upload or create): newer than the claim, so a merge keeps it."""
    return {"since": time.time(), "released": True}


def active_claim(shard: ShardRecord) -> dict[str, Any] | None:
    """The shard's claim, unless released or the shard has its batch."""
    claim = shard.claim
    return claim if claim and not claim.get("released") and shard.batch_id is None else None


def claim_alive(claim: dict[str, Any]) -> bool:
    """True while the process that made `claim` may still be submitting: on this machine, its
    pid is running; on another, the claim is younger than CLAIM_TTL_S."""
    if claim.get("host") == socket.gethostname():
        try:
            os.kill(int(claim.get("pid") or 0), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, ValueError, OverflowError):
            return True  # a pid of another user's: running
        return int(claim.get("pid") or 0) > 0
    return time.time() - float(claim.get("since") or 0) < CLAIM_TTL_S
