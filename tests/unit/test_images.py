"""prepare_image and image_header on the shared corpus of valid and broken files."""

from __future__ import annotations

import hashlib
import io
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image, ImageFile, JpegImagePlugin

from beam_caption.inputs.fetch import read_uri_bytes
from beam_caption.inputs.images import (
    ImageError,
    PreparedImage,
    PrepareSettings,
    dct_scale,
    first_line,
    image_header,
    prepare_image,
    sent_size,
)
from tests.fixtures.images import BIG_SIZE, EXPECTED, MARKER, PHOTO_SIZE, make_image_corpus

DEFAULT = PrepareSettings()
MAX_BYTES = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus, built once for the module."""
    root = tmp_path_factory.mktemp("corpus")
    assert make_image_corpus(root) == EXPECTED
    return root


def _prepare(corpus: Path, name: str, settings: PrepareSettings = DEFAULT) -> PreparedImage:
    """Read like the pipeline does (read_uri_bytes), then prepare."""
    path = str(corpus / name)
    return prepare_image(path, read_uri_bytes(path, max_bytes=MAX_BYTES), settings)


def _decode(jpeg: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(jpeg))
    assert im.format == "JPEG"
    im.load()
    return im


def _near(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


def test_corpus_builds_quickly(tmp_path: Path) -> None:
    started = time.perf_counter()
    make_image_corpus(tmp_path)
    # Measured ~0.5 s; the bound leaves room for a busy 2-core CI machine.
    assert time.perf_counter() - started < 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(n for n, code in EXPECTED.items() if code is None))
def test_valid_files_become_small_jpegs(corpus: Path, name: str) -> None:
    data = (corpus / name).read_bytes()
    prepared = _prepare(corpus, name)
    assert prepared.image_id == hashlib.sha256(data).hexdigest()
    assert prepared.bytes == len(data)
    assert prepared.uri == str(corpus / name)
    sent = _decode(prepared.jpeg)
    assert sent.mode in ("RGB", "L")
    assert sent.size == (prepared.sent_width, prepared.sent_height)
    assert max(sent.size) <= DEFAULT.max_side
    # Shrinking keeps the aspect ratio (to within rounding).
    assert abs(sent.width / sent.height - prepared.width / prepared.height) < 0.01


@pytest.mark.parametrize("name", sorted(n for n, code in EXPECTED.items() if code is not None))
def test_broken_files_get_their_expected_code(corpus: Path, name: str) -> None:
    with pytest.raises(ImageError) as caught:
        _prepare(corpus, name)
    assert caught.value.code == EXPECTED[name]
    expected_stage = "read" if EXPECTED[name] == "empty_file" else "decode"
    assert caught.value.stage == expected_stage
    assert caught.value.message and str(caught.value) == caught.value.message


def test_empty_bytes_fail_in_prepare_too() -> None:
    with pytest.raises(ImageError) as caught:
        prepare_image("x.jpg", b"", DEFAULT)
    assert (caught.value.code, caught.value.stage) == ("empty_file", "read")


def test_sizes_after_shrink(corpus: Path) -> None:
    photo = _prepare(corpus, "photo.jpg")
    assert (photo.width, photo.height) == PHOTO_SIZE
    assert (photo.sent_width, photo.sent_height) == (512, 384)
    big = _prepare(corpus, "big_12mp.jpg")
    assert (big.width, big.height) == BIG_SIZE
    # Decoded at 1/8 by libjpeg and sent as is: 504 is within DCT_SLACK of 512.
    assert (big.sent_width, big.sent_height) == (504, 378)
    small = _prepare(corpus, "photo.jpg", PrepareSettings(max_side=100))
    assert (small.sent_width, small.sent_height) == (100, 75)
    # Never enlarged: a 160x120 GIF stays 160x120.
    gif = _prepare(corpus, "animated.gif")
    assert (gif.sent_width, gif.sent_height) == (160, 120)
    assert gif.source_format == "GIF"


def test_exif_orientation_swaps_dimensions_and_rotates_pixels(corpus: Path) -> None:
    prepared = _prepare(corpus, "rotated_exif6.jpg")
    # Stored 640x480 with orientation 6 (rotate 90 degrees clockwise to display).
    assert (prepared.width, prepared.height) == (480, 640)
    assert (prepared.sent_width, prepared.sent_height) == (384, 512)
    sent = _decode(prepared.jpeg).convert("RGB")
    assert "exif" not in sent.info or sent.getexif().get(0x0112, 1) == 1
    # The marker drawn in the stored top-left corner is displayed top-right, and only there.
    w, h = sent.width - 5, sent.height - 5
    corners = {"top-left": (5, 5), "top-right": (w, 5), "bottom-left": (5, h),
               "bottom-right": (w, h)}
    marked = [name for name, xy in corners.items() if _near(sent.getpixel(xy), MARKER)]
    assert marked == ["top-right"]


def test_modes_are_converted(corpus: Path) -> None:
    cmyk = _decode(_prepare(corpus, "cmyk.jpg").jpeg)
    assert cmyk.mode == "RGB"
    # Transparent pixels are flattened on white, not black.
    alpha = _decode(_prepare(corpus, "alpha.png").jpeg).convert("RGB")
    assert min(alpha.getpixel((10, alpha.height - 10))) > 240
    # 16-bit values are scaled to 8 bits, not clipped: the ramp's middle is mid-grey.
    gray = _decode(_prepare(corpus, "gray16.png").jpeg).convert("L")
    assert gray.getpixel((2, 10)) < 10
    assert 110 < gray.getpixel((gray.width // 2, 10)) < 146
    assert gray.getpixel((gray.width - 3, 10)) > 245
    palette = _decode(_prepare(corpus, "palette.png").jpeg)
    assert palette.mode == "RGB"


def test_draft_mode_is_used_for_the_12mp_jpeg(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[tuple[int, int], tuple[int, int]]] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None):
        result = real_draft(self, mode, size)
        calls.append((size, self.size))
        return result

    resamples: list[str] = []
    for name in ("resize", "reduce"):
        real = getattr(Image.Image, name)

        def counting(self, *args, _real=real, _name=name, **kwargs):
            resamples.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(Image.Image, name, counting)
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    _prepare(corpus, "big_12mp.jpg")
    # libjpeg decodes straight at 1/8 (504x378, within 512) and nothing is resampled.
    assert calls == [((504, 378), (504, 378))]
    assert resamples == []
    # 800x600 at 1/2 would be 400 px, too far under 512: drafted at 1/1 and resampled.
    _prepare(corpus, "photo.jpg")
    assert calls[1:] == [((512, 384), (800, 600))] and resamples == ["resize"]


def test_draft_decode_is_much_cheaper_than_a_full_decode(corpus: Path) -> None:
    data = (corpus / "big_12mp.jpg").read_bytes()

    def best_of_three(work) -> float:
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            work()
            timings.append(time.perf_counter() - started)
        return min(timings)

    def full_decode() -> None:
        Image.open(io.BytesIO(data)).load()

    prepared = best_of_three(lambda: prepare_image("big", data, DEFAULT))
    full = best_of_three(full_decode)
    assert prepared < 0.5 * full, (prepared, full)


def test_max_side_zero_sends_plain_jpeg_as_is(corpus: Path) -> None:
    keep = PrepareSettings(max_side=0)
    photo = _prepare(corpus, "photo.jpg", keep)
    assert photo.jpeg == (corpus / "photo.jpg").read_bytes()
    assert (photo.sent_width, photo.sent_height) == PHOTO_SIZE
    # Not plain JPEG -> re-encoded at full size.
    for name in ("alpha.png", "cmyk.jpg", "rotated_exif6.jpg"):
        prepared = _prepare(corpus, name, keep)
        assert prepared.jpeg != (corpus / name).read_bytes()
        assert (prepared.sent_width, prepared.sent_height) == (prepared.width, prepared.height)
        assert _decode(prepared.jpeg).size == (prepared.width, prepared.height)
    # The original is still decoded (cheaply) to prove it is whole.
    with pytest.raises(ImageError) as caught:
        _prepare(corpus, "truncated.jpg", keep)
    assert caught.value.code == "decode_error"


def test_jpeg_quality_is_applied(corpus: Path) -> None:
    low = _prepare(corpus, "big_12mp.jpg", PrepareSettings(jpeg_quality=20))
    high = _prepare(corpus, "big_12mp.jpg", PrepareSettings(jpeg_quality=95))
    assert len(low.jpeg) < len(high.jpeg) * 0.7


def test_pixel_cap_is_configurable(corpus: Path) -> None:
    with pytest.raises(ImageError) as caught:
        _prepare(corpus, "photo.jpg", PrepareSettings(max_pixels=PHOTO_SIZE[0] * PHOTO_SIZE[1] - 1))
    assert caught.value.code == "too_many_pixels"
    assert _prepare(corpus, "photo.jpg", PrepareSettings(max_pixels=PHOTO_SIZE[0] * PHOTO_SIZE[1]))


def test_a_higher_cap_lifts_pillows_guard_for_that_call_only(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process where Pillow's global guard is lower than our cap (800x600 is > 2x 50,000).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)
    data = (corpus / "photo.jpg").read_bytes()
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))
    assert prepare_image("p", data, PrepareSettings(max_pixels=1_000_000)).sent_width == 512
    assert Image.MAX_IMAGE_PIXELS == 50_000  # restored
    with pytest.raises(ImageError) as caught:
        prepare_image("p", data, PrepareSettings(max_pixels=40_000))
    assert caught.value.code == "too_many_pixels"


def test_concurrent_calls_agree_with_serial_ones(corpus: Path) -> None:
    names = sorted(EXPECTED) * 2

    def outcome(name: str) -> str:
        try:
            return _prepare(corpus, name).image_id
        except ImageError as error:
            return error.code

    serial = [outcome(name) for name in names]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(outcome, names)) == serial


def test_unsupported_containers_are_named() -> None:
    with pytest.raises(ImageError) as caught:
        prepare_image("x.pdf", b"%PDF-1.7\n" + b"\x00" * 64, DEFAULT)
    assert caught.value.code == "unsupported_format"
    assert "PDF" in caught.value.message


def test_a_heic_that_is_only_a_header_is_a_decode_error() -> None:
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    with pytest.raises(ImageError) as caught:
        prepare_image("x.heic", heic, DEFAULT)
    assert caught.value.code == "decode_error"
    assert "HEIC" in caught.value.message


def test_source_id_and_prompt_are_carried(corpus: Path) -> None:
    data = (corpus / "photo.jpg").read_bytes()
    prepared = prepare_image("u", data, DEFAULT, source_id="42", prompt="What is it?")
    assert (prepared.source_id, prepared.prompt) == ("42", "What is it?")


def test_size_from_header_is_oriented_and_does_not_decode(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[str] = []
    real_load = ImageFile.ImageFile.load

    def counting_load(self: ImageFile.ImageFile):
        loads.append(self.format or "")
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    assert image_header((corpus / "rotated_exif6.jpg").read_bytes()) == (480, 640, True)
    assert image_header((corpus / "big_12mp.jpg").read_bytes()) == (*BIG_SIZE, True)
    assert image_header((corpus / "alpha.png").read_bytes()) == (320, 240, False)
    assert loads == []
    for name in ("bomb.png", "text.png", "empty.jpg"):
        with pytest.raises(ImageError) as caught:
            image_header((corpus / name).read_bytes())
        assert caught.value.code == EXPECTED[name]


def test_settings_are_validated() -> None:
    for bad in ({"max_side": -1}, {"jpeg_quality": 0}, {"jpeg_quality": 101}, {"max_pixels": 0}):
        with pytest.raises(ValueError):
            PrepareSettings(**bad)


def test_image_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(ImageError("not_found", "file not found", stage="read")))
    assert (error.code, error.stage, error.message) == ("not_found", "read", "file not found")


def test_first_line_is_one_bounded_line() -> None:
    assert first_line(ValueError("\n  bad CRC\nmore detail")) == "bad CRC"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError("x" * 500)) == "x" * 200
    assert first_line(OSError("x" * 500), 160) == "x" * 160


@pytest.mark.parametrize(("size", "max_side", "scale", "sent"), [
    ((4032, 3024), 512, 8, (504, 378)),  # an iPhone photo: 1/8 is 98% of 512
    ((4031, 3023), 512, 8, (504, 378)),  # libjpeg rounds each scaled side up
    ((3024, 4032), 512, 8, (378, 504)),
    ((4624, 3468), 512, 1, (512, 384)),  # 1/8 is 578, over 512: resampled
    ((3264, 2448), 512, 1, (512, 384)),  # 1/8 is 408, 80% of 512: resampled, not sent small
    ((1920, 1080), 512, 4, (480, 270)),  # 1/4 is 480, 94%
    ((4608, 4608), 576, 8, (576, 576)),  # exactly --max-side
    ((512, 384), 512, 1, (512, 384)),  # already within: never enlarged, never scaled
    ((4032, 3024), 0, 1, (4032, 3024)),  # --max-side 0: the original size
])
def test_jpegs_are_sent_at_a_dct_scale_within_reach_of_max_side(
        size: tuple[int, int], max_side: int, scale: int, sent: tuple[int, int]) -> None:
    assert dct_scale(*size, max_side) == scale
    assert sent_size(*size, max_side, jpeg=True) == sent
    image = Image.new("RGB", size, (90, 120, 150))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    prepared = prepare_image("x.jpg", out.getvalue(), PrepareSettings(max_side=max_side))
    assert (prepared.sent_width, prepared.sent_height) == sent
