"""`--near-dedupe`: bursts captioned once. Two transforms around CaptionImages:

    prepared | GroupNearDuplicates(config, settings) -> (representatives, followers)
    representatives | CaptionImages(...) -> captions, errors
    (captions, errors, followers) | ShareCaptions(config) -> follower rows, savings

GroupNearDuplicates keys each prepared photo by a coarse key (its camera, the minute it was
taken, inputs/similar.py, and its prompt: a burst shares an answer only to the same question)
and groups them with a GroupByKey: one camera's minute meets on one
worker, never the whole library. Within it, photos near-identical to an earlier one (hash of
the JPEG prepared for sending, capture times seconds apart) become followers of that
representative; only representatives are sent. Photos without a capture time, and videos, are
never grouped (they pass through as their own representatives).

ShareCaptions joins each follower to its representative's row by the representative's
request_key (a CoGroupByKey-like GroupByKey; a uri would not do: one file may be listed with two
prompts): the follower gets the caption with `deduplicated_from` naming the representative,
`near_duplicate = true` and `cost_usd = 0`; each such row saves one request and the
representative's cost, counted in the summary. A follower whose representative got no caption
becomes an error row (not billed, so `--resume` sends it later).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from beam_caption.config import CaptionConfig
from beam_caption.inputs.images import PreparedImage
from beam_caption.inputs.similar import (
    NearSettings,
    Shot,
    cluster,
    coarse_key,
    fingerprint,
    seconds_of,
)
from beam_caption.pipeline import rows

FOLLOWERS, ERRORS, SAVED = "followers", "errors", "saved"


class NearGroups(NamedTuple):
    """GroupNearDuplicates' outputs: images to send, and (representative uri, follower fields)."""

    representatives: beam.PCollection
    followers: beam.PCollection


class SharedRows(NamedTuple):
    """ShareCaptions' outputs: follower caption rows, follower error rows, ("saved", row)."""

    captions: beam.PCollection
    errors: beam.PCollection
    saved: beam.PCollection


def _camera(image: PreparedImage) -> str:
    meta = image.meta
    return f"{meta.camera_make or ''}|{meta.camera_model or ''}" if meta else "|"


def _keyed(image: PreparedImage) -> Iterator[Any]:
    """(coarse key, image) for a photo with a capture time; others tagged as representatives.
    Photos asked different questions (a manifest's prompt column) never meet."""
    taken = seconds_of(image.meta.taken_at) if image.meta else None
    if image.media_type != "image" or taken is None:
        yield TaggedOutput("alone", image)
        return
    asked = hashlib.sha256(image.prompt.encode()).hexdigest()[:16] if image.prompt else ""
    yield f"{coarse_key(_camera(image), taken)}|{asked}", image


def _shot_id(image: PreparedImage) -> str:
    """What tells two listed photos apart in a group (one file may be listed under two ids)."""
    return f"{image.uri}\0{image.source_id or ''}\0{image.prompt or ''}"


def follower_fields(config: CaptionConfig, image: PreparedImage) -> dict[str, Any]:
    """What a follower's row needs of it (never its JPEG: followers are shuffled again)."""
    return {**{name: getattr(image, name, None) for name in rows.IMAGE_FIELDS},
            "source_key": config.source_key(image.uri, image.version, image.prompt),
            "request_key": config.request_key(image.image_id, image.prompt),
            "meta": image.meta, "media_type": image.media_type}


class _PickFn(beam.DoFn):
    def __init__(self, config: CaptionConfig, settings: NearSettings) -> None:
        self._config = config
        self._settings = settings

    def process(self, element: tuple[str, list[PreparedImage]]) -> Iterator[Any]:
        """Yield representatives; followers tagged FOLLOWERS as (the representative's
        request_key, fields with its uri as "representative")."""
        _, images = element
        by_id: dict[str, PreparedImage] = {}
        for image in images:
            shot_id = _shot_id(image)
            while shot_id in by_id:  # the same listing twice (SortLibrary was not before it)
                shot_id += "\0"
            by_id[shot_id] = image  # every image kept: none may vanish without a row
        shots = [Shot(shot_id, _camera(i), seconds_of(i.meta.taken_at) or 0.0,
                      *fingerprint(i.jpeg)) for shot_id, i in by_id.items()]
        followers = cluster(shots, self._settings)
        for shot_id, image in by_id.items():
            rep_id = followers.get(shot_id)
            if rep_id is None:
                yield image
                continue
            rep = by_id[rep_id]
            fields = {**follower_fields(self._config, image), "representative": rep.uri}
            yield TaggedOutput(FOLLOWERS, (self._config.request_key(rep.image_id, rep.prompt),
                                           fields))


class GroupNearDuplicates(beam.PTransform):
    """PreparedImage -> NearGroups(representatives to send, followers)."""

    def __init__(self, config: CaptionConfig, settings: NearSettings) -> None:
        super().__init__()
        self._config = config
        self._settings = settings

    def expand(self, images: beam.PCollection) -> NearGroups:
        """Key by camera and minute, group, cluster each group."""
        keyed = images | "KeyByCameraMinute" >> beam.FlatMap(_keyed).with_outputs(
            "alone", main="keyed")
        picked = (keyed.keyed
                  | "GroupCameraMinutes" >> beam.GroupByKey()
                  | "PickRepresentatives" >> beam.ParDo(
                      _PickFn(self._config, self._settings)).with_outputs(
                          FOLLOWERS, main="representatives"))
        reps = (keyed.alone, picked.representatives) | "AllRepresentatives" >> beam.Flatten()
        return NearGroups(reps, picked[FOLLOWERS])


class _ShareFn(beam.DoFn):
    def __init__(self, run_id: str) -> None:
        self._run_id = run_id

    def process(self, element: tuple[str, list[tuple[str, Any]]]) -> Iterator[Any]:
        """Follower rows for one representative (by its request_key)."""
        _, items = element
        followers = [value for kind, value in items if kind == "follower"]
        if not followers:
            return
        answered = [value for kind, value in items if kind == "caption"]
        failed = [value for kind, value in items if kind == "error"]
        for fields in followers:
            if answered:
                rep = answered[0]
                yield rows.near_duplicate_row(rep, fields)
                yield TaggedOutput(SAVED, ("saved", {"usd": rep.get("cost_usd") or 0.0}))
            else:
                code = failed[0]["code"] if failed else "no_row"
                yield TaggedOutput(ERRORS, rows.error_row(
                    uri=fields["uri"], image_id=fields["image_id"], stage="request",
                    code="near_duplicate_unanswered", request_key=fields["request_key"],
                    source_key=fields["source_key"], run_id=self._run_id,
                    message=f"not sent: a near-duplicate of {fields['representative']}, which "
                            f"got no caption ({code})"))


class ShareCaptions(beam.PTransform):
    """(captions, errors, followers) -> SharedRows: each follower gets its representative's
    caption (or an error row when it has none)."""

    def __init__(self, config: CaptionConfig) -> None:
        super().__init__()
        self._run_id = config.run_id

    def expand(self, pcolls: tuple[beam.PCollection, ...]) -> SharedRows:
        """Join followers to their representative's row by its request_key."""
        captions, errors, followers = pcolls
        result = (
            (captions | "KeyCaptions" >> beam.Map(lambda r: (r["request_key"], ("caption", r))),
             errors | "KeyErrors" >> beam.Map(lambda r: (r["request_key"], ("error", r))),
             followers | "KeyFollowers" >> beam.Map(lambda f: (f[0], ("follower", f[1]))))
            | "AllByRepresentative" >> beam.Flatten()
            | "GroupByRepresentative" >> beam.GroupByKey()
            | "Share" >> beam.ParDo(_ShareFn(self._run_id)).with_outputs(
                ERRORS, SAVED, main="captions"))
        return SharedRows(result.captions, result[ERRORS], result[SAVED])
