"""A phone library through `beam-caption run` against the simulator: every format captioned,
sidecars and system files skipped and counted (never error rows), Takeout metadata joined to its
photo, EXIF columns, the --context line, and --no-location."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from beam_caption.simulator import running_simulator
from tests.fixtures import phone, scenes
from tests.integration.pipeline_helpers import (
    IN_MEMORY,
    logged_requests,
    read_rows,
    read_summary,
    run_cli,
)

pytestmark = pytest.mark.slow

SECRET = "sk-test-" + "ph0ne" * 6
LISBON = (38.7223, -9.1393, 12.5)
KYOTO = (35.0116, 135.7681, 40.0)
TAKEN = datetime(2024, 7, 3, 18, 40, 12)
# name -> kind it is skipped as
SKIPPED = {"IMG_0001.AAE": "aae_sidecar", "IMG_0002.MOV": "live_photo_motion",
           "PXL_0003.jpg.json": "takeout_json", "orphan.AAE": "aae_sidecar",
           "DSC_0042.xmp": "xmp_sidecar", ".DS_Store": "system_file",
           "Thumbs.db": "system_file", ".thumbnails/t1.jpg": "thumbnail",
           "lost.json": "takeout_json"}
VIDEOS = {"clip.mp4", "MVI_0100.MOV"}
CAPTIONED = {"IMG_0001.HEIC", "IMG_0002.JPG", "PXL_0003.jpg", "photo.avif", "photo.webp",
             "anim.gif", "anim.webp", "DSC0001.MPO", "DSC_0042.DNG", "Screenshot.png", *VIDEOS}
BROKEN = {"broken.heic": "decode_error", "nopreview.nef": "decode_error",
          "truncated.mp4": "decode_error", "notavideo.mov": "decode_error"}


def _library(folder: Path) -> None:
    """A small phone library with every kind of file (Live Photo, sidecars, Takeout)."""
    files = {
        "IMG_0001.HEIC": phone.heic((1200, 900), phone.exif_block(
            orientation=6, taken=TAKEN, offset="+01:00", gps=LISBON, lens="back camera")),
        "IMG_0001.AAE": b"<?xml version='1.0'?><plist><dict/></plist>",
        "IMG_0002.JPG": phone.encode(phone.picture((1600, 1200)), "JPEG", phone.exif_block(
            make="Google", model="Pixel 8", taken=TAKEN, gps=KYOTO), quality=85),
        "IMG_0002.MOV": b"\x00\x00\x00\x14ftypqt  " + b"\x00" * 64,
        "PXL_0003.jpg": phone.encode(phone.picture((800, 600)), "JPEG", quality=85),
        "PXL_0003.jpg.json": json.dumps({
            "title": "PXL_0003.jpg", "photoTakenTime": {"timestamp": "1720028412"},
            "geoData": {"latitude": 48.8584, "longitude": 2.2945, "altitude": 35.0}}).encode(),
        "photo.avif": phone.encode(phone.picture((1000, 750)), "AVIF"),
        "photo.webp": phone.encode(phone.picture((1000, 750)), "WEBP"),
        "anim.gif": phone.animation("GIF", [(255, 0, 0), (0, 255, 0), (0, 0, 255)]),
        "anim.webp": phone.animation("WEBP", [(255, 0, 0), (0, 255, 0), (0, 0, 255)]),
        "DSC0001.MPO": phone.mpo(),
        "DSC_0042.DNG": phone.camera_raw(orientation=6),
        "DSC_0042.xmp": b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>",
        "Screenshot.png": phone.encode(phone.picture((1170, 2532)), "PNG"),
        "orphan.AAE": b"<plist/>",
        "lost.json": b'{"title": "gone.jpg", "photoTakenTime": {"timestamp": "1"}}',
        ".DS_Store": b"\x00\x00\x00\x01Bud1" + b"\x00" * 32,
        "Thumbs.db": b"\xd0\xcf\x11\xe0" + b"\x00" * 32,
        ".thumbnails/t1.jpg": phone.encode(phone.picture((96, 96)), "JPEG"),
        "broken.heic": phone.heic()[:300],
        "nopreview.nef": phone.camera_raw(with_preview=False),
        "clip.mp4": phone.video(seconds=4.0, size=(640, 480)),
        "MVI_0100.MOV": phone.video(seconds=6.0, size=(640, 360), rotation=-90, fmt="mov",
                                    tags={"com.apple.quicktime.creationdate":
                                          "2024-07-03T18:40:12+0100",
                                          "location": "+38.7223-009.1393+012.500/"}),
        "truncated.mp4": phone.video(seconds=4.0)[:3000],
        "notavideo.mov": b"this is not a video at all" * 10,
    }
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("library")
    _library(folder)
    return folder


@pytest.fixture(scope="module")
def sim_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim") / "requests.jsonl"


@pytest.fixture(scope="module")
def sim(sim_log: Path):
    with running_simulator(api_key=SECRET, log_path=str(sim_log)) as handle:
        yield handle


def _run(library: Path, out: Path, sim, *flags: str) -> int:
    os.environ["BC_TEST_KEY"] = SECRET
    try:
        return run_cli("run", "--input", str(library), "--output", str(out),
                       "--base-url", sim.base_url, "--api-key-env", "BC_TEST_KEY",
                       "--overwrite", *flags, *IN_MEMORY)
    finally:
        del os.environ["BC_TEST_KEY"]


@pytest.fixture(scope="module")
def context_run(library, sim, sim_log, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("out")
    sim_log.write_text("")
    code = _run(library, out, sim, "--context", "exif")
    return code, out, logged_requests(sim_log)


def _name(row: dict, library: Path) -> str:
    return Path(row["uri"]).relative_to(library).as_posix()


def test_every_format_is_captioned_and_every_sidecar_skipped(library, context_run) -> None:
    code, out, requests = context_run
    assert code == 0
    captions = {_name(r, library): r for r in read_rows(out, "captions")}
    errors = {_name(r, library): r for r in read_rows(out, "errors")}
    assert set(captions) == CAPTIONED
    assert {name: row["code"] for name, row in errors.items()} == BROKEN
    assert all(row["message"] for row in errors.values())  # a reason, not just a code
    assert len(requests) == len(CAPTIONED)
    summary = read_summary(out)
    want: dict[str, int] = {}
    for kind in SKIPPED.values():
        want[kind] = want.get(kind, 0) + 1
    assert summary["skipped"] == dict(sorted(want.items()))
    assert summary["errors"] == len(BROKEN) and summary["captions"] == len(CAPTIONED)


def test_formats_are_sent_upright_as_jpeg(library, context_run) -> None:
    _, out, _ = context_run
    rows = {_name(r, library): r for r in read_rows(out, "captions")}
    heic, raw = rows["IMG_0001.HEIC"], rows["DSC_0042.DNG"]
    assert (heic["width"], heic["height"]) == (900, 1200)
    assert (heic["sent_width"], heic["sent_height"]) == (384, 512)
    assert raw["height"] > raw["width"]  # the RAW container's orientation turns the preview
    assert all(r["media_type"] == "image" for n, r in rows.items() if n not in VIDEOS)


def test_exif_and_takeout_metadata_fill_the_columns(library, context_run) -> None:
    _, out, _ = context_run
    rows = {_name(r, library): r for r in read_rows(out, "captions")}
    heic = rows["IMG_0001.HEIC"]
    assert heic["taken_at"] == TAKEN and heic["taken_at_offset"] == "+01:00"
    assert (heic["camera_make"], heic["camera_model"]) == ("Apple", "iPhone 15 Pro")
    assert heic["lens_model"] == "back camera"
    assert heic["gps_latitude"] == pytest.approx(LISBON[0], abs=1e-4)
    assert heic["gps_longitude"] == pytest.approx(LISBON[1], abs=1e-4)
    assert heic["gps_altitude"] == pytest.approx(LISBON[2])
    pixel = rows["IMG_0002.JPG"]
    assert pixel["camera_model"] == "Pixel 8" and pixel["taken_at_offset"] is None
    # No EXIF at all: the Takeout sidecar gives the time (UTC) and the place.
    takeout = rows["PXL_0003.jpg"]
    assert takeout["taken_at"] == datetime(2024, 7, 3, 17, 40, 12)
    assert takeout["taken_at_offset"] == "+00:00"
    assert takeout["gps_latitude"] == pytest.approx(48.8584)
    assert rows["photo.webp"]["taken_at"] is None and rows["photo.webp"]["gps_latitude"] is None


def test_the_context_line_names_the_time_and_place(context_run) -> None:
    _, _, requests = context_run
    prompts = [body["messages"][-1]["content"][0]["text"] for body in requests]
    assert "Describe this photo in one sentence.\nTaken 2024-07-03 18:40 near Lisbon, Portugal." \
        in prompts
    assert any(p.endswith("near Kyoto, Japan.") for p in prompts)
    assert any(p.endswith("Taken 2024-07-03 17:40 near Paris, France.") for p in prompts)
    # A photo that says neither when nor where gets the plain prompt.
    assert prompts.count("Describe this photo in one sentence.") >= 4
    assert any(p.startswith("These images are frames of one video clip")
               and p.endswith("Recorded 2024-07-03 18:40 near Lisbon, Portugal.")
               for p in prompts)


def test_a_video_is_one_row_with_its_frames_sent_and_billed(library, context_run) -> None:
    _, out, requests = context_run
    rows = {_name(r, library): r for r in read_rows(out, "captions")}
    clip, portrait = rows["clip.mp4"], rows["MVI_0100.MOV"]
    for row in (clip, portrait):
        assert row["media_type"] == "video" and row["caption"]
        assert len(row["frame_times_s"]) == 4 and row["frame_times_s"] == sorted(
            row["frame_times_s"])
        # Billed as the frames sent: the simulator's bill is the estimate for 4 images.
        assert row["prompt_tokens"] == row["estimated_prompt_tokens"]
    assert clip["duration_s"] == pytest.approx(4.0) and clip["frame_count"] == 40
    assert (clip["sent_width"], clip["sent_height"]) == (512, 384)
    # A phone's portrait clip: coded landscape, shown (and sent) upright.
    assert (portrait["width"], portrait["height"]) == (360, 640)
    assert portrait["sent_height"] > portrait["sent_width"]
    assert portrait["taken_at"] == TAKEN and portrait["taken_at_offset"] == "+01:00"
    assert portrait["gps_latitude"] == pytest.approx(38.7223)
    photo = rows["IMG_0002.JPG"]
    assert clip["prompt_tokens"] > 3 * (photo["prompt_tokens"] - 30)
    video_requests = [b for b in requests if "video clip" in b["messages"][-1]["content"][0][
        "text"]]
    assert len(video_requests) == 2
    assert all([p["type"] for p in b["messages"][-1]["content"]] == ["text"] + ["image_url"] * 4
               for b in video_requests)


def test_video_skip_counts_clips_as_skipped(library, sim, tmp_path) -> None:
    out = tmp_path / "out"
    assert _run(library, out, sim, "--video", "skip") == 0
    names = {_name(r, library) for r in read_rows(out, "captions")}
    assert not names & VIDEOS
    skipped = read_summary(out)["skipped"]
    assert skipped["video"] == 4 and skipped["live_photo_motion"] == 1


def test_no_location_drops_gps_columns_and_places(library, sim, sim_log, tmp_path) -> None:
    sim_log.write_text("")
    out = tmp_path / "out"
    assert _run(library, out, sim, "--context", "exif", "--no-location") == 0
    rows = read_rows(out, "captions")
    assert rows and all(r["gps_latitude"] is None and r["gps_longitude"] is None
                        and r["gps_altitude"] is None for r in rows)
    prompts = [b["messages"][-1]["content"][0]["text"] for b in logged_requests(sim_log)]
    assert not any("near" in p for p in prompts)
    assert any(p.endswith("Taken 2024-07-03 18:40.") for p in prompts)


def _bursts(folder: Path, bursts: int = 3, shots: int = 4, distinct: int = 6) -> None:
    """Bursts (one camera, shots 0.2 s apart) and distinct photos taken in the same seconds."""
    for b in range(bursts):
        for i, frame in enumerate(scenes.burst(b, shots)):
            exif = phone.exif_block(taken=datetime(2024, 7, 3, 18, 40, b * 3), gps=LISBON)
            (folder / f"IMG_1{b}{i:02d}.JPG").write_bytes(phone.encode(frame, "JPEG", exif))
    for i, image in enumerate(scenes.look_alikes(3, distinct)):
        exif = phone.exif_block(taken=datetime(2024, 7, 3, 18, 40, i))
        (folder / f"IMG_2{i:03d}.JPG").write_bytes(phone.encode(image, "JPEG", exif))


def test_near_dedupe_captions_a_burst_once(sim, sim_log, tmp_path) -> None:
    folder, out = tmp_path / "roll", tmp_path / "out"
    folder.mkdir()
    _bursts(folder)
    sim_log.write_text("")
    assert _run(folder, out, sim, "--near-dedupe") == 0
    rows = read_rows(out, "captions")
    assert len(rows) == 3 * 4 + 6 and read_rows(out, "errors") == []
    followers = [r for r in rows if r["near_duplicate"]]
    reps = {r["uri"]: r for r in rows if not r["near_duplicate"]}
    assert len(logged_requests(sim_log)) == len(reps)
    for row in followers:
        rep = reps[row["deduplicated_from"]]
        assert row["caption"] == rep["caption"] and row["cost_usd"] == 0
        assert row["deduplicated"] and row["request_key"] != rep["request_key"]
        # Never a distinct photo, never across bursts.
        assert Path(row["uri"]).name[:6] == Path(rep["uri"]).name[:6]
    assert not any(Path(r["uri"]).name.startswith("IMG_2") for r in followers)
    summary = read_summary(out)
    saved = summary["near_dedupe"]
    assert saved["requests_saved"] == len(followers) >= 6
    assert saved["usd_saved"] == pytest.approx(sum(reps[r["deduplicated_from"]]["cost_usd"]
                                                   for r in followers))
    assert summary["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in reps.values()))


def test_near_dedupe_shares_an_answer_only_to_the_same_question(sim, sim_log, capsys,
                                                                tmp_path) -> None:
    folder, out = tmp_path / "roll", tmp_path / "out"
    folder.mkdir()
    _bursts(folder, bursts=1, distinct=0)  # IMG_1000..IMG_1003: one burst
    count = "How many people are in this photo? Answer with a number."
    asked = {"IMG_1000.JPG": "", "IMG_1001.JPG": count, "IMG_1002.JPG": "",
             "IMG_1003.JPG": count}
    manifest = tmp_path / "asked.csv"
    # The first shot is also listed under an id of its own: the same file twice must follow
    # itself once, not leave both listings without a representative.
    manifest.write_text("uri,prompt,id\n" + "".join(
        f"{folder}/{name},{prompt},\n" for name, prompt in asked.items())
        + f"{folder}/IMG_1000.JPG,,mine\n")
    sim_log.write_text("")
    os.environ["BC_TEST_KEY"] = SECRET
    try:
        assert run_cli("run", "--manifest", str(manifest), "--output", str(out), "--base-url",
                       sim.base_url, "--api-key-env", "BC_TEST_KEY", "--near-dedupe",
                       *IN_MEMORY) == 0
    finally:
        del os.environ["BC_TEST_KEY"]
    rows = read_rows(out, "captions")
    assert len(rows) == 5 and read_rows(out, "errors") == []
    followers = [r for r in rows if r["near_duplicate"]]
    # IMG_1001 is a near-copy of IMG_1000 but was asked another question: it is sent, and
    # the burst shares within each question only.
    assert sorted((Path(r["uri"]).name, r["source_id"] or "", Path(r["deduplicated_from"]).name)
                  for r in followers) == [("IMG_1000.JPG", "mine", "IMG_1000.JPG"),
                                          ("IMG_1002.JPG", "", "IMG_1000.JPG"),
                                          ("IMG_1003.JPG", "", "IMG_1001.JPG")]
    sent = [json.dumps(body["messages"]) for body in logged_requests(sim_log)]
    assert len(sent) == 2 and sum(count in body for body in sent) == 1
    # estimate's bound groups by question too: at most 3 of the 5 listings could follow.
    report = _estimate(capsys, "--manifest", str(manifest), "--near-dedupe")
    assert report["near_duplicates"]["max"] == 3


def _estimate(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert run_cli("estimate", "--json", *args, *IN_MEMORY) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("flags", [(), ("--context", "exif")])
def test_estimate_counts_what_run_sends(library, sim, capsys, tmp_path, flags) -> None:
    report = _estimate(capsys, "--input", str(library), *flags)
    out = tmp_path / "out"
    assert _run(library, out, sim, *flags) == 0
    captions = read_rows(out, "captions")
    summary = read_summary(out)
    assert report["skipped"] == summary["skipped"]
    assert report["images"] == len(captions)  # photos and videos, one request each
    assert report["videos"] == 2 and report["video_frames"] == 8
    assert report["unreadable"] == len(BROKEN)  # a broken video's header fails too
    # The header-only estimate of input tokens is the run's bill, video frames and context
    # lines included.
    assert report["chosen"]["input_tokens"] == sum(r["prompt_tokens"] for r in captions)
    assert report["near_duplicates"] is None


def test_estimate_gives_near_dedupe_as_a_range(sim, capsys, tmp_path) -> None:
    folder, out = tmp_path / "roll", tmp_path / "out"
    folder.mkdir()
    _bursts(folder)
    report = _estimate(capsys, "--input", str(folder), "--near-dedupe")
    assert _run(folder, out, sim, "--near-dedupe") == 0
    saved = read_summary(out)["near_dedupe"]["requests_saved"]
    near = report["near_duplicates"]
    assert near["min"] == 0 <= saved <= near["max"] < report["images"]
