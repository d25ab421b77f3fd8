"""The formats of a phone library through prepare_image and image_header: HEIC, AVIF, WebP, MPO,
animations and camera RAW previews, each upright, shrunk and sent as JPEG; broken ones as
error codes with a reason."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from beam_caption.inputs.formats import is_raw, raw_preview
from beam_caption.inputs.images import ImageError, PrepareSettings, image_header, prepare_image
from tests.fixtures import phone

DEFAULT = PrepareSettings(max_side=512)


def _sent(data: bytes, uri: str):
    prepared = prepare_image(uri, data, DEFAULT)
    sent = Image.open(io.BytesIO(prepared.jpeg))
    assert sent.format == "JPEG"
    assert sent.size == (prepared.sent_width, prepared.sent_height)
    return prepared, sent.convert("RGB")


@pytest.mark.parametrize(("fmt", "uri"), [("HEIF", "IMG_0001.HEIC"), ("AVIF", "a.avif")])
def test_heic_and_avif_are_sent_upright(fmt: str, uri: str) -> None:
    # Landscape pixels with orientation 6 (rotate 90 degrees): shown, and sent, as portrait.
    data = phone.encode(phone.picture((1200, 900)), fmt, phone.exif_block(orientation=6),
                        quality=60)
    prepared, sent = _sent(data, uri)
    assert (prepared.width, prepared.height) == (900, 1200)
    assert sent.size == (384, 512)
    assert image_header(data, uri) == (900, 1200, False)


def test_webp_is_shrunk_and_reencoded() -> None:
    prepared, sent = _sent(phone.encode(phone.picture((1200, 900)), "WEBP"), "x.webp")
    assert prepared.source_format == "WEBP"
    assert sent.size == (512, 384)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_an_animation_is_represented_by_its_middle_frame(fmt: str) -> None:
    data = phone.animation(fmt, [(255, 0, 0), (0, 255, 0), (0, 255, 0), (0, 0, 255)])
    _, sent = _sent(data, f"anim.{fmt.lower()}")
    red, green, blue = sent.getpixel((80, 60))
    assert green > 200 and red < 40 and blue < 40


def test_an_mpo_sends_its_primary_picture() -> None:
    prepared, sent = _sent(phone.mpo(), "DSC0001.MPO")
    red, _, blue = sent.getpixel((10, 10))
    assert red > 180 and blue < 60
    assert (prepared.width, prepared.height) == (640, 480)


def test_a_camera_raw_sends_its_largest_embedded_preview_upright() -> None:
    data = phone.camera_raw(preview_size=(1600, 1200), orientation=6)
    prepared, sent = _sent(data, "DSC_0042.DNG")
    assert prepared.source_format == "RAW"
    assert (prepared.width, prepared.height) == (1200, 1600)
    assert sent.size == (384, 512)
    assert prepared.bytes == len(data)  # the RAW file's own bytes are what is identified
    assert image_header(data, "DSC_0042.DNG") == (1200, 1600, True)
    preview, orientation = raw_preview(data)
    assert orientation == 6 and Image.open(io.BytesIO(preview)).size == (1600, 1200)
    # The camera is named by the RAW container, not by its preview.
    assert (prepared.meta.camera_make, prepared.meta.camera_model) == ("TestCam", "RAW-1")


def test_a_raw_without_a_preview_is_a_decode_error_never_a_develop() -> None:
    with pytest.raises(ImageError) as caught:
        prepare_image("x.nef", phone.camera_raw(with_preview=False), DEFAULT)
    assert caught.value.code == "decode_error"
    assert "preview" in caught.value.message


def test_raw_files_are_named_by_extension() -> None:
    assert is_raw("gs://b/DCIM/IMG_1.CR3") and is_raw("/x/a.dng") and is_raw("a.ARW")
    assert not is_raw("a.jpg") and not is_raw("raw") and not is_raw("/a.dng/b.jpg")


def test_a_heic_header_is_read_without_decoding() -> None:
    data = phone.heic((1200, 900))
    # Cut into the coded picture (mdat comes last): the boxes still parse, the pixels do not.
    cut = data[: data.rfind(b"mdat") + 64]
    assert image_header(cut, "IMG.HEIC") == (1200, 900, False)
    with pytest.raises(ImageError) as caught:
        prepare_image("IMG.HEIC", cut, DEFAULT)
    assert caught.value.code == "decode_error"


@pytest.mark.parametrize("cut", [40, 200])
def test_a_corrupt_heic_is_a_decode_error_with_a_reason(cut: int) -> None:
    data = phone.heic()
    with pytest.raises(ImageError) as caught:
        prepare_image("IMG.HEIC", data[:cut] + b"\x00" * 300, DEFAULT)
    assert caught.value.code == "decode_error"
    assert caught.value.message


def test_a_corrupt_avif_is_a_decode_error() -> None:
    data = phone.encode(phone.picture(), "AVIF")
    with pytest.raises(ImageError) as caught:
        prepare_image("x.avif", data[:60], DEFAULT)
    assert caught.value.code == "decode_error"


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF", "WEBP", "PNG", "JPEG"])
def test_every_format_is_turned_like_a_viewer_turns_it(fmt: str) -> None:
    # A red corner on a blue landscape picture, orientation 6: Pillow's exif_transpose of the
    # JPEG is what a viewer shows; each format must send the same picture.
    from PIL import ImageOps

    base = Image.new("RGB", (400, 300), (0, 0, 255))
    base.paste((255, 0, 0), (0, 0, 100, 100))
    exif = phone.exif_block(orientation=6)
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(phone.encode(base, "JPEG", exif))))
    _, sent = _sent(phone.encode(base, fmt, exif), f"x.{fmt.lower()}")
    assert sent.size == shown.size == (300, 400)
    corners = [(5, 5), (294, 5), (5, 394), (294, 394)]
    assert [sent.getpixel(c)[0] > 200 for c in corners] == \
        [shown.getpixel(c)[0] > 200 for c in corners]


def test_a_heic_size_comes_from_a_header_prefix() -> None:
    # libheif refuses a cut file; the meta box at its start already holds the size.
    import numpy as np

    from beam_caption.inputs.heif_boxes import heif_size

    noise = np.random.default_rng(0).integers(0, 255, (600, 800, 3), dtype=np.uint8)
    for orientation, want in ((1, (800, 600)), (6, (600, 800))):
        data = phone.encode(Image.fromarray(noise), "HEIF",
                            phone.exif_block(orientation=orientation), quality=90)
        assert len(data) > 256 * 1024
        assert image_header(data[:256 * 1024], "IMG.HEIC") == (*want, False)
        assert heif_size(data) == want
    assert heif_size(b"\x00" * 100) is None and heif_size(phone.heic()[:60]) is None
    assert heif_size(b"\x00\x00\x00\x10meta" + b"\xff" * 40) is None  # damaged boxes
