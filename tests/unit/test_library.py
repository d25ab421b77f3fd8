"""Sorting a phone library's files (inputs/kinds.py, inputs/library.py), the metadata a photo
carries (inputs/metadata.py) and the --context line and its request key."""

from __future__ import annotations

import io
import json
from datetime import datetime

import pytest
from PIL import Image

from beam_caption.config import CaptionConfig
from beam_caption.inputs import kinds
from beam_caption.inputs.context import context_line
from beam_caption.inputs.library import LibrarySettings, sort_group
from beam_caption.inputs.metadata import PhotoMeta, exif_meta, takeout_meta
from beam_caption.inputs.refs import ImageRef
from tests.fixtures import phone


@pytest.mark.parametrize(("uri", "kind"), [
    ("/roll/IMG_0001.HEIC", kinds.PHOTO), ("/roll/IMG_0001.MOV", kinds.VIDEO),
    ("/roll/IMG_0001.AAE", kinds.AAE_SIDECAR), ("gs://b/x/DSC_1.XMP", kinds.XMP_SIDECAR),
    ("/t/IMG_1.jpg.supplemental-metadata.json", kinds.TAKEOUT_JSON),
    ("/roll/.DS_Store", kinds.SYSTEM_FILE), ("/roll/Thumbs.db", kinds.SYSTEM_FILE),
    ("/roll/._IMG_0001.HEIC", kinds.SYSTEM_FILE),
    ("/DCIM/.thumbnails/123.jpg", kinds.THUMBNAIL), ("/vol/@eaDir/a.jpg/SYNOPHOTO.jpg",
                                                     kinds.THUMBNAIL),
    ("/t/archive_browser.html", kinds.DOCUMENT), ("/roll/unknown.xyz", kinds.PHOTO),
    ("/roll/list.jsonl", kinds.DOCUMENT), ("/roll/list.parquet", kinds.DOCUMENT),
])
def test_kinds_by_name(uri: str, kind: str) -> None:
    assert kinds.kind_of(uri) == kind


def test_neighbours_share_a_key() -> None:
    names = ["IMG_0001.HEIC", "IMG_0001.MOV", "IMG_0001.AAE", "IMG_0001.HEIC.json",
             "img_0001.heic.supplemental-metadata.json", "IMG_0001(1).HEIC",
             "IMG_0001.HEIC(1).json"]
    assert {kinds.group_key("/roll/" + n) for n in names} == {"/roll/img_0001"}
    assert kinds.group_key("/a/IMG_0001.HEIC") != kinds.group_key("/b/IMG_0001.HEIC")


def test_takeout_sidecars_find_their_photo() -> None:
    photos = ["/t/IMG_0001.JPG", "/t/IMG_0001(1).JPG"]
    assert kinds.takeout_target("/t/IMG_0001.JPG.json", photos) == "/t/IMG_0001.JPG"
    assert kinds.takeout_target("/t/IMG_0001.JPG(1).json", photos) == "/t/IMG_0001(1).JPG"
    assert kinds.takeout_target("/t/IMG_0001.JPG.supplemental-met.json",
                                photos) == "/t/IMG_0001.JPG"
    assert kinds.takeout_target("/t/IMG_0001.json", photos[:1]) == photos[0]
    assert kinds.takeout_target("/t/IMG_0001.json", []) is None


def _sorted(names: list[str], settings: LibrarySettings | None = None, sidecars=None):
    refs = [ImageRef("/roll/" + n) for n in names]
    reader = (sidecars or {}).get
    out = list(sort_group(refs, settings or LibrarySettings(),
                          lambda uri: reader(uri.rsplit("/", 1)[-1])))
    sent = [r for r in out if isinstance(r, ImageRef)]
    skipped = {s.uri.rsplit("/", 1)[-1]: s.kind for s in out if isinstance(s, kinds.Skipped)}
    return sent, skipped


def test_a_live_photo_sends_its_still_and_skips_its_motion() -> None:
    sent, skipped = _sorted(["IMG_0001.HEIC", "IMG_0001.MOV", "IMG_0001.AAE"])
    assert [r.uri for r in sent] == ["/roll/IMG_0001.HEIC"]
    assert skipped == {"IMG_0001.MOV": kinds.LIVE_PHOTO_MOTION,
                       "IMG_0001.AAE": kinds.AAE_SIDECAR}
    # A clip with no still beside it is a video to caption, unless --video skip.
    assert [r.uri for r in _sorted(["MVI_0002.MP4"])[0]] == ["/roll/MVI_0002.MP4"]
    assert _sorted(["MVI_0002.MP4"], LibrarySettings(video="skip"))[1] == {
        "MVI_0002.MP4": kinds.VIDEO_SKIPPED}
    # --live-photo-motion: the motion part is captioned as a video too.
    sent, skipped = _sorted(["IMG_0001.HEIC", "IMG_0001.MOV"],
                            LibrarySettings(live_photo_motion=True))
    assert {r.uri for r in sent} == {"/roll/IMG_0001.HEIC", "/roll/IMG_0001.MOV"}
    assert skipped == {}


def test_only_a_still_of_the_same_name_makes_a_clip_a_live_photo_motion() -> None:
    # Names with dots share a group (the stem up to the first dot) without being a pair.
    sent, skipped = _sorted(["2024.07.03 beach walk.mp4", "2024.07.03 sunset.jpg"])
    assert {r.uri for r in sent} == {"/roll/2024.07.03 beach walk.mp4",
                                     "/roll/2024.07.03 sunset.jpg"}
    assert skipped == {}
    sent, skipped = _sorted(["2024.07.03 sunset.JPG", "2024.07.03 Sunset.mov",
                             "IMG_0002(1).HEIC", "IMG_0002(1).MOV"])
    assert skipped == {"2024.07.03 Sunset.mov": kinds.LIVE_PHOTO_MOTION,
                       "IMG_0002(1).MOV": kinds.LIVE_PHOTO_MOTION}
    # A copy's clip is not the motion of the original's still.
    assert _sorted(["IMG_5.jpg", "IMG_5(1).mov"])[1] == {}


def test_a_question_mark_is_part_of_a_file_name_but_starts_a_url_query() -> None:
    assert kinds.kind_of("/roll/clip?.mp4") == kinds.VIDEO
    assert kinds.kind_of("/roll/why?.AAE") == kinds.AAE_SIDECAR
    assert kinds.split_name("gs://b/x/a?.jpg") == ("gs://b/x/", "a?.jpg")
    assert kinds.split_name("https://h/x/a.mp4?sig=1/2") == ("https://h/x/", "a.mp4")
    assert kinds.kind_of("https://h/x/a.mp4?sig=1/2") == kinds.VIDEO


def test_a_file_listed_again_is_sent_once_and_counted() -> None:
    refs = [ImageRef("/roll/a.jpg"), ImageRef("/roll/a.jpg"), ImageRef("/roll/a.jpg", "id-2"),
            ImageRef("/roll/a.jpg", prompt="Count the people."), ImageRef("/roll/a.jpg"),
            ImageRef("/roll/b.jpg")]
    out = list(sort_group(refs, LibrarySettings()))
    sent = [(r.uri, r.source_id, r.prompt) for r in out if isinstance(r, ImageRef)]
    # Another id or another prompt is another row (another question, or the caller's own id).
    assert sent == [("/roll/a.jpg", None, None), ("/roll/a.jpg", "id-2", None),
                    ("/roll/a.jpg", None, "Count the people."), ("/roll/b.jpg", None, None)]
    assert [(s.uri, s.kind) for s in out if isinstance(s, kinds.Skipped)] == [
        ("/roll/a.jpg", kinds.LISTED_AGAIN)] * 2


def test_sidecars_without_their_photo_are_still_skipped() -> None:
    sent, skipped = _sorted(["orphan.AAE", "orphan.jpg.json"],
                            sidecars={"orphan.jpg.json": b"{not json"})
    assert sent == [] and set(skipped) == {"orphan.AAE", "orphan.jpg.json"}


def test_a_takeout_sidecar_travels_with_its_photo() -> None:
    doc = {"title": "PXL_1.jpg", "photoTakenTime": {"timestamp": "1720028412"},
           "geoData": {"latitude": 0.0, "longitude": 0.0},
           "geoDataExif": {"latitude": 38.7, "longitude": -9.1, "altitude": 3}}
    sent, _ = _sorted(["PXL_1.jpg", "PXL_1.jpg.json"],
                      sidecars={"PXL_1.jpg.json": json.dumps(doc).encode()})
    meta = sent[0].meta
    assert meta is not None and meta.taken_at == "2024-07-03T17:40:12"
    assert (meta.gps_latitude, meta.gps_longitude) == (38.7, -9.1)  # 0,0 means "unknown"


def test_takeout_meta_refuses_other_json() -> None:
    assert takeout_meta(b'{"albums": []}') is None
    assert takeout_meta(b"\xff\xfe") is None
    assert takeout_meta(b'{"photoTakenTime": {"timestamp": "x"}}') == PhotoMeta()
    # Any other shape under Takeout's keys is ignored, never an error.
    for odd in ('"2020-01-01 10:00"', "1577872800", "[1, 2]", "null", '{"timestamp": [1]}'):
        doc = f'{{"photoTakenTime": {odd}, "geoData": {odd}, "geoDataExif": {odd}}}'
        assert takeout_meta(doc.encode()) == PhotoMeta(), odd


def test_exif_meta_reads_time_offset_camera_and_gps() -> None:
    data = phone.encode(phone.picture(), "JPEG", phone.exif_block(
        make="Apple", model="iPhone 15", lens="tele", taken=datetime(2024, 7, 3, 18, 40),
        offset="-07:00", gps=(-33.8568, 151.2153, -4.0)))
    meta = exif_meta(Image.open(io.BytesIO(data)))
    assert meta.taken_at == "2024-07-03T18:40:00" and meta.taken_at_offset == "-07:00"
    assert (meta.camera_make, meta.camera_model, meta.lens_model) == ("Apple", "iPhone 15", "tele")
    assert meta.gps_latitude == pytest.approx(-33.8568, abs=1e-4)
    assert meta.gps_longitude == pytest.approx(151.2153, abs=1e-4)
    assert meta.gps_altitude == -4.0


def test_exif_fills_before_the_sidecar_and_positions_stay_whole() -> None:
    exif = PhotoMeta(taken_at="2024-01-01T10:00:00", gps_latitude=1.0, gps_longitude=None)
    sidecar = PhotoMeta(taken_at="2024-01-01T09:00:00", taken_at_offset="+00:00",
                        gps_latitude=2.0, gps_longitude=3.0, gps_altitude=4.0)
    merged = exif.filled_from(sidecar)
    assert merged.taken_at == "2024-01-01T10:00:00" and merged.taken_at_offset is None
    assert (merged.gps_latitude, merged.gps_longitude, merged.gps_altitude) == (2.0, 3.0, 4.0)


def test_context_line() -> None:
    meta = PhotoMeta(taken_at="2024-07-03T18:40:12", gps_latitude=38.7223,
                     gps_longitude=-9.1393)
    assert context_line(meta) == "Taken 2024-07-03 18:40 near Lisbon, Portugal."
    assert context_line(meta, location=False) == "Taken 2024-07-03 18:40."
    assert context_line(PhotoMeta(gps_latitude=46.0, gps_longitude=7.75)) == \
        "Taken near Zermatt, Switzerland."  # a village is not named after a far city
    assert context_line(PhotoMeta()) is None and context_line(None) is None


def test_context_changes_the_request_key_and_the_prompt() -> None:
    plain = CaptionConfig.create(model="gpt-5.4-nano", base_url="http://127.0.0.1:1")
    with_context = CaptionConfig.create(model="gpt-5.4-nano", base_url="http://127.0.0.1:1")
    with_context = type(plain)(**{**vars(with_context), "context": "exif"})
    assert plain.request_key("abc") != with_context.request_key("abc")
    meta = PhotoMeta(taken_at="2024-07-03T18:40:00")
    assert plain.context_for(meta) is None
    line = with_context.context_for(meta)
    assert with_context.prompt_for(None, line) == plain.request.prompt + "\n" + line
    assert with_context.estimated_prompt_tokens((512, 384), None, line) > \
        plain.estimated_prompt_tokens((512, 384))
