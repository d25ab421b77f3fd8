"""--near-dedupe's grouping (inputs/similar.py) measured on generated bursts and distinct scenes:
no false merge at the default settings, and most burst shots merged."""

from __future__ import annotations

import io

import pytest

from beam_caption.inputs.images import PrepareSettings, prepare_image
from beam_caption.inputs.similar import NearSettings, Shot, cluster, coarse_key, fingerprint
from tests.fixtures.scenes import burst, look_alikes, scene

BURSTS, SHOTS = 20, 5


def _shot(uri: str, image, taken_s: float, camera: str = "Apple|iPhone 15") -> Shot:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    sent = prepare_image(uri, out.getvalue(), PrepareSettings(max_side=512)).jpeg
    return Shot(uri, camera, taken_s, *fingerprint(sent))


@pytest.fixture(scope="module")
def shots() -> tuple[list[Shot], dict[str, str]]:
    """Bursts and distinct photos, all from one camera within seconds (the hardest case: only
    the pictures can tell them apart). Returns the shots and each one's true scene."""
    all_shots, scene_of = [], {}
    for b in range(BURSTS):
        for i, frame in enumerate(burst(b, SHOTS)):
            uri = f"burst{b:02d}_{i}.jpg"
            all_shots.append(_shot(uri, frame, b * 0.5 + i * 0.1))
            scene_of[uri] = f"burst{b}"
    distinct = [scene(1000 + s) for s in range(40)] + look_alikes(5, 15) + look_alikes(9, 15)
    for i, image in enumerate(distinct):
        uri = f"distinct{i:03d}.jpg"
        all_shots.append(_shot(uri, image, i * 0.1))
        scene_of[uri] = uri
    return all_shots, scene_of


def test_no_false_merges_and_bursts_merged_at_the_defaults(shots) -> None:
    all_shots, scene_of = shots
    followers = cluster(all_shots, NearSettings())
    false = {f: r for f, r in followers.items() if scene_of[f] != scene_of[r]}
    distinct = [s.uri for s in all_shots if s.uri.startswith("distinct")]
    # A distinct photo is neither merged into anything nor has anything merged into it.
    merged_distinct = [u for u in distinct if u in followers or u in followers.values()]
    assert false == {} and merged_distinct == []
    # Requests saved: at most SHOTS - 1 per burst; the generated bursts move up to 16 px and
    # change exposure, so a few shots stay apart (they are sent: a lost saving, never a wrong
    # caption).
    saved = len(followers)
    print(f"near-dedupe: {saved} of {BURSTS * (SHOTS - 1)} burst shots merged, "
          f"{len(false)} false merges among {len(all_shots)} photos")
    assert saved >= 0.6 * BURSTS * (SHOTS - 1)


def test_time_and_camera_keep_look_alikes_apart(shots) -> None:
    all_shots, _ = shots
    same = all_shots[:SHOTS]  # one burst
    apart = [Shot(s.uri, s.camera, s.taken_s + 60 * i, s.dhash, s.colors)
             for i, s in enumerate(same)]
    assert cluster(apart, NearSettings()) == {}
    other_camera = [Shot(s.uri, f"cam{i}", s.taken_s, s.dhash, s.colors)
                    for i, s in enumerate(same)]
    assert cluster(other_camera, NearSettings()) == {}
    assert len(cluster(same, NearSettings())) >= 1


def test_clusters_compare_with_the_representative_and_are_order_free(shots) -> None:
    all_shots, _ = shots
    forward = cluster(all_shots, NearSettings())
    assert cluster(list(reversed(all_shots)), NearSettings()) == forward
    reps = set(forward.values())
    assert not reps & set(forward)  # a representative never follows another


def test_coarse_keys_split_by_camera_and_minute() -> None:
    assert coarse_key("a", 119.0) == coarse_key("a", 61.0) != coarse_key("a", 121.0)
    assert coarse_key("a", 61.0) != coarse_key("b", 61.0)


def _fields(uri: str, representative: str = "a.jpg") -> dict:
    return {"uri": uri, "image_id": "f" * 64, "source_id": None, "width": 8, "height": 6,
            "sent_width": 8, "sent_height": 6, "bytes": 10, "source_key": None,
            "request_key": "k-" + uri, "meta": None, "media_type": "image",
            "representative": representative}


def test_a_follower_shares_its_representatives_caption_at_no_cost() -> None:
    from datetime import UTC, datetime

    from beam_caption.pipeline.near_dedupe import _ShareFn

    rep = {"uri": "a.jpg", "caption": "a dog", "cost_usd": 0.0002, "request_key": "k-a",
           "deduplicated": False, "created_at": datetime.now(UTC), "prompt_tokens": 100}
    # Joined by the representative's request_key.
    out = list(_ShareFn("run").process(("k-a", [("caption", rep),
                                                ("follower", _fields("b.jpg"))])))
    row, saved = out[0], out[1].value
    assert row["uri"] == "b.jpg" and row["caption"] == "a dog" and row["cost_usd"] == 0.0
    assert row["deduplicated_from"] == "a.jpg" and row["near_duplicate"] and row["deduplicated"]
    assert row["request_key"] == "k-b.jpg" and row["attempts"] == 0
    assert saved == ("saved", {"usd": 0.0002})


def test_a_follower_of_a_failed_representative_is_an_unbilled_error_row() -> None:
    from beam_caption.pipeline.near_dedupe import ERRORS, _ShareFn

    failed = {"uri": "a.jpg", "code": "http_400", "request_key": "k-a"}
    out = list(_ShareFn("run").process(("k-a", [("error", failed),
                                                ("follower", _fields("b.jpg"))])))
    assert len(out) == 1 and out[0].tag == ERRORS
    row = out[0].value
    assert row["code"] == "near_duplicate_unanswered" and row["cost_usd"] is None
    assert "a.jpg" in row["message"] and "http_400" in row["message"]
    assert list(_ShareFn("run").process(("k-a", [("caption", {"uri": "a.jpg"})]))) == []


def test_the_same_listing_twice_is_never_dropped_by_the_grouping() -> None:
    from dataclasses import replace

    from beam_caption.api.request import RequestSettings
    from beam_caption.config import CaptionConfig
    from beam_caption.engine.settings import EndpointConfig
    from beam_caption.inputs.metadata import PhotoMeta
    from beam_caption.pipeline.near_dedupe import FOLLOWERS, _PickFn

    out = io.BytesIO()
    scene(0).save(out, "JPEG")
    image = replace(prepare_image("/p/a.jpg", out.getvalue(), PrepareSettings(max_side=64)),
                    meta=PhotoMeta(taken_at="2024-07-03T18:40:12"))
    config = CaptionConfig(request=RequestSettings(model="gpt-5.4-nano", prompt="Say it."),
                           endpoint=EndpointConfig(base_url="http://127.0.0.1:1/v1"))
    # Composed without SortLibrary before it, one listing can reach the group twice.
    picked = list(_PickFn(config, NearSettings()).process(("k", [image, image])))
    followers = [p for p in picked if getattr(p, "tag", None) == FOLLOWERS]
    assert len(picked) == 2 and len(followers) == 1, "one sent, one following: both have rows"
