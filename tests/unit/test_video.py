"""Videos (inputs/video.py): keyframes evenly spaced, each a JPEG; broken clips as error codes."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from beam_caption.config import CaptionConfig
from beam_caption.inputs.images import ImageError, PrepareSettings
from beam_caption.inputs.kinds import media_type_of
from beam_caption.inputs.video import prepare_video, prepare_video_uri, sample_times, video_header
from tests.fixtures import phone

SETTINGS = PrepareSettings(max_side=512, video_frames=4)


def _prepare(data: bytes, frames: int = 4):
    return prepare_video("clip.mp4", data, SETTINGS, frames, image_id="x", size=len(data))


def test_times_are_the_middles_of_equal_parts() -> None:
    assert sample_times(8.0, 4) == [1.0, 3.0, 5.0, 7.0]
    assert sample_times(0.0, 4) == [0.0]


def test_keyframes_are_sent_in_order_as_jpegs() -> None:
    data = phone.video(seconds=4.0, fps=10, size=(640, 480), gop=10)
    video = _prepare(data)
    assert video.media_type == "video" and len(video.frames) == 4
    assert list(video.frame_times_s) == sorted(video.frame_times_s)
    reds = [Image.open(io.BytesIO(j)).convert("RGB").getpixel((500, 10))[0]
            for j in video.frames]
    assert reds == sorted(reds) and reds[0] < reds[-1]  # red brightens with time
    assert video_header(data).frame_count == 40


def test_a_short_clip_sends_each_keyframe_once() -> None:
    data = phone.video(seconds=1.0, fps=10, gop=100)  # one keyframe
    video = _prepare(data, frames=4)
    assert len(video.frames) == 1 and video.frame_times_s == (0.0,)


@pytest.mark.parametrize("cut", [100, 3000])
def test_a_truncated_or_foreign_file_is_a_decode_error(cut: int) -> None:
    with pytest.raises(ImageError) as caught:
        _prepare(phone.video()[:cut])
    assert caught.value.code == "decode_error" and caught.value.message


def test_an_empty_or_missing_video_is_a_read_error(tmp_path) -> None:
    empty = tmp_path / "empty.mov"
    empty.write_bytes(b"")
    with pytest.raises(ImageError) as caught:
        prepare_video_uri(str(empty), SETTINGS)
    assert caught.value.code == "empty_file"
    with pytest.raises(ImageError) as caught:
        prepare_video_uri(str(tmp_path / "missing.mov"), SETTINGS)
    assert caught.value.code == "not_found"


def test_a_streamed_video_has_the_id_of_its_bytes(tmp_path) -> None:
    import hashlib

    data = phone.video(seconds=2.0)
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    video = prepare_video_uri(str(path), SETTINGS)
    assert video.image_id == hashlib.sha256(data).hexdigest() and video.bytes == len(data)


def test_a_video_has_its_own_request_key_and_prompt() -> None:
    config = CaptionConfig.create(model="gpt-5.4-nano", base_url="http://127.0.0.1:1")
    assert media_type_of("/a/IMG_1.MOV") == "video" and media_type_of("/a/x.heic") == "image"
    assert config.request_key("x", None, "video") != config.request_key("x")
    video = _prepare(phone.video(seconds=4.0))
    built = config.image_request(video)
    assert built.images == video.frames and built.prompt == config.video_prompt
    one = config.estimated_prompt_tokens((video.sent_width, video.sent_height))
    assert built.estimated_prompt_tokens > 3 * (one - 20)
