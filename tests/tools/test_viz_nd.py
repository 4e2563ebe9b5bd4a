"""Pictures of 1-D, 3-D and video maps, checked by content: slices through the peak, the map's
absolute level kept across slices, frames and GIFs equal to the overlays, the signal band's
colours following the map."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from lightning_cam.tools import viz, viz_nd


def _peaked(shape: tuple[int, ...], peak: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cam = rng.uniform(0.0, 0.6, size=shape).astype(np.float32)
    cam[peak] = 1.0
    return cam


def _panel(picture: np.ndarray, k: int, size: int, widths: list[int]) -> np.ndarray:
    """The ``k``-th tile of a :func:`viz_nd._row` picture (2 px padding)."""
    x = 2 + sum(widths[:k]) + 2 * k
    return picture[2 : 2 + size, x : x + widths[k]]


def test_picture_kind_follows_the_rank() -> None:
    assert [viz_nd.picture_kind(r) for r in (1, 2, 3)] == ["signal", "image", "volume"]
    assert viz_nd.picture_kind(3, "time") == "video"
    with pytest.raises(ValueError, match="4 spatial axes"):
        viz_nd.picture_kind(4)
    with pytest.raises(ValueError, match="third_axis"):
        viz_nd.picture_kind(3, "frames")  # type: ignore[arg-type]


def test_peak_index_plateau_and_constant() -> None:
    cam = np.zeros((5, 6, 7))
    assert viz_nd.peak_index(cam) == (2, 3, 3)
    cam[1:4, 2, 2] = 1.0  # a plateau along z: its middle voxel
    assert viz_nd.peak_index(cam) == (2, 2, 2)
    cam[0, 0, 0] = np.nan
    assert viz_nd.peak_index(torch.from_numpy(cam)) == (2, 2, 2)


def test_volume_slices_cut_through_the_peak() -> None:
    s, peak = 16, (3, 11, 6)
    cam = _peaked((s, s, s), peak)
    vol = np.zeros((1, s, s, s), np.float32)
    pic = viz_nd.volume_slices(vol, cam, alpha=1.0, size=s, labels=False)
    assert pic.shape == (s + 4, 3 * s + 8, 3)
    expected = [cam[peak[0]], cam[:, peak[1]], cam[:, :, peak[2]]]
    for k, plane in enumerate(expected):
        np.testing.assert_array_equal(_panel(pic, k, s, [s] * 3), viz.colorize(plane))
    # each plane holds the peak's colour (jet at 1.0) exactly once
    top = viz.colorize(np.ones((1, 1)))[0, 0]
    for k in range(3):
        hits = np.all(_panel(pic, k, s, [s] * 3) == top, axis=-1)
        assert hits.sum() == 1


def test_volume_slices_keep_the_maps_level_and_the_volumes_scale() -> None:
    cam = np.zeros((8, 8, 8), np.float32)
    cam[0] = 0.2  # a faint slice stays faint (no per-slice normalisation)
    cam[5, 4, 4] = 1.0
    vol = np.zeros((1, 8, 8, 8), np.float32)
    vol[0, 0] = 10.0  # min-max over the whole volume: slice 0 white, the others black
    pic = viz_nd.volume_slices(vol, cam, index=(0, 4, 4), alpha=0.5, size=8, labels=False)
    axial = _panel(pic, 0, 8, [8] * 3).astype(float)
    want = 0.5 * 255 + 0.5 * viz.colorize(np.full((8, 8), 0.2)).astype(float)
    np.testing.assert_allclose(axial, np.broadcast_to(want, axial.shape), atol=1)


def test_volume_slices_refuse_mismatched_shapes_and_indices() -> None:
    with pytest.raises(ValueError, match="same spatial shape"):
        viz_nd.volume_slices(np.zeros((1, 8, 8, 8)), np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="inside"):
        viz_nd.volume_slices(np.zeros((8, 8, 8)), np.zeros((8, 8, 8)), index=(8, 0, 0))


def test_volume_montage_spreads_slices_along_the_axis() -> None:
    cam = np.zeros((12, 8, 8), np.float32)
    for z in range(12):
        cam[z] = z / 11  # slice z has level z / 11
    pic = viz_nd.volume_montage(np.zeros((12, 8, 8)), cam, num_slices=4, ncol=4, size=8,
                                alpha=1.0)  # fmt: skip
    assert pic.shape == (8 + 4, 4 * 10 + 2, 3)
    for k, z in enumerate([1, 4, 7, 10]):  # cell centres of 4 cells over 12 slices
        tile = pic[2 : 2 + 8, 2 + k * 10 : 2 + k * 10 + 8]
        np.testing.assert_array_equal(tile[-1], viz.colorize(cam[z])[-1])  # under the label


def test_video_frames_strip_tensor_and_gif() -> None:
    from PIL import Image

    t, h, w = 6, 10, 12
    video = torch.rand(3, t, h, w)
    cam = torch.rand(t, h, w)
    frames = viz_nd.video_frames(video, cam, alpha=1.0)
    assert frames.shape == (t, h, w, 3) and frames.dtype == np.uint8
    for i in range(t):
        np.testing.assert_array_equal(frames[i], viz.colorize(cam[i]))
    plain = viz_nd.video_frames(video, cam, alpha=0.0)
    expect = np.round(video.permute(1, 2, 3, 0).numpy() * 255).astype(np.uint8)
    assert np.abs(plain.astype(int) - expect).max() <= 1
    strip = viz_nd.video_strip(frames, num_frames=3, size=h, labels=False)
    for k, ti in enumerate([1, 3, 5]):
        np.testing.assert_array_equal(_panel(strip, k, h, [w] * 3), frames[ti])
    tensor = viz_nd.video_tensor(frames)
    assert tensor.shape == (1, t, 3, h, w)
    np.testing.assert_array_equal(tensor[0, 2].permute(1, 2, 0).numpy(), frames[2])
    gif = Image.open(io.BytesIO(viz_nd.encode_gif(frames, fps=5)))
    assert gif.n_frames == t and gif.info["duration"] == 200
    gif.seek(3)
    back = np.asarray(gif.convert("RGB")).astype(int)
    assert np.abs(back - frames[3]).mean() < 12  # 256-colour palette per frame


def test_save_gif_writes_the_file(tmp_path) -> None:
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    viz_nd.save_gif(tmp_path / "a" / "v.gif", frames)
    assert (tmp_path / "a" / "v.gif").read_bytes()[:6] == b"GIF89a"
    with pytest.raises(ValueError, match="uint8"):
        viz_nd.save_gif(tmp_path / "b.gif", frames.astype(np.float32))


def _band_rows(pic: np.ndarray, colours: np.ndarray) -> list[int]:
    """Rows where most pixels are exactly one of ``colours`` (the opaque band)."""
    hit = np.zeros(pic.shape[:2], bool)
    for c in colours:
        hit |= np.all(pic == c, axis=-1)
    return [r for r in range(pic.shape[0]) if hit[r].mean() > 0.6]


def test_signal_band_colours_follow_the_map() -> None:
    length = 64
    ramp = np.linspace(0.0, 1.0, length)
    lut = viz.colorize(np.linspace(0, 1, 256)[None])[0].astype(int)  # level -> colour
    pic = viz_nd.signal_band(np.sin(ramp * 12), ramp, width=400, height=160)
    rows = _band_rows(pic, viz.colorize(ramp[None])[0])
    assert rows, "no opaque band found"
    row = pic[rows[len(rows) // 2]].astype(int)
    colours = set(map(tuple, viz.colorize(ramp[None])[0]))
    cols = [x for x in range(pic.shape[1]) if tuple(row[x]) in colours]
    levels = [int(np.argmin(((lut - row[x]) ** 2).sum(1))) for x in cols]
    assert levels[0] <= 4 and levels[-1] >= 251
    assert all(b >= a for a, b in zip(levels, levels[1:], strict=False))  # left to right: up


def test_signal_band_places_the_map_and_the_mask_on_the_samples() -> None:
    length = 100
    cam = np.zeros(length)
    cam[60:80] = 1.0
    mask = np.zeros(length, bool)
    mask[60:80] = True
    pic = viz_nd.signal_band(np.zeros((2, length)), cam, mask=mask, width=500, height=200)
    lo, hi = viz.colorize(np.zeros((1, 1)))[0, 0], viz.colorize(np.ones((1, 1)))[0, 0]
    row = pic[_band_rows(pic, np.stack([lo, hi]))[0]]
    blue = np.flatnonzero(np.all(row == lo, axis=-1))
    red = np.flatnonzero(np.all(row == hi, axis=-1))
    x0, x1 = blue.min(), blue.max() + 1  # the band's extent: samples 0..100
    scale = (x1 - x0) / length
    assert abs((red.min() - x0) / scale - 60) <= 1 and abs((red.max() + 1 - x0) / scale - 80) <= 1
    black = np.all(pic[:, x0:x1] == 0, axis=-1)
    truth_rows = [r for r in range(pic.shape[0]) if black[r].mean() > 0.15]
    cols = np.flatnonzero(black[truth_rows[len(truth_rows) // 2]])
    assert abs(cols.min() / scale - 60) <= 1 and abs((cols.max() + 1) / scale - 80) <= 1


def test_signal_band_refuses_a_map_of_another_length() -> None:
    with pytest.raises(ValueError, match="upsample"):
        viz_nd.signal_band(np.zeros(64), np.zeros(16))
    with pytest.raises(ValueError, match=r"mask must be \(64,\)"):
        viz_nd.signal_band(np.zeros(64), np.zeros(64), mask=np.zeros(10))


def test_mean_std_of_another_channel_count_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"mean has 3 values for an input of 1 channel"):
        viz_nd.volume_slices(np.zeros((1, 8, 8, 8)), np.zeros((8, 8, 8)), mean=[0.5] * 3,
                             std=[0.2] * 3)  # fmt: skip
    undone = viz_nd.video_frames(np.full((1, 2, 4, 4), -1.0), np.zeros((2, 4, 4)), alpha=0.0,
                                 mean=0.5, std=0.5)  # fmt: skip
    assert int(undone.max()) == 0  # -1 * 0.5 + 0.5 = 0: black


# ----------------------------------------------------------------------------- guided gradients


def _by_hand(g: np.ndarray) -> np.ndarray:
    """The 2-D guided picture's rule over the whole array: ``0.5 + 0.1 (g - mean) / std``
    clipped to [0, 1], in 8-bit levels."""
    z = (g - g.mean()) / g.std()
    return np.round(np.clip(0.5 + 0.1 * z, 0.0, 1.0) * 255).astype(np.uint8)


def test_guided_frames_are_normalised_over_the_whole_clip() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.standard_normal((3, 4, 6, 5)) * np.array([1.0, 3.0, 0.1])[:, None, None, None]
    np.testing.assert_array_equal(viz_nd.guided_frames(rgb), np.moveaxis(_by_hand(rgb), 0, -1))
    # other channel counts: the first channel, normalised together with the others (grey)
    two = rng.standard_normal((2, 4, 6, 5))
    want = _by_hand(two)[0]
    got = viz_nd.guided_frames(torch.from_numpy(two).float())
    assert np.abs(got.astype(int) - np.repeat(want[..., None], 3, -1).astype(int)).max() <= 1
    # one scale for every frame: a frame with a tenth of the gradient is fainter, not stretched
    clip = rng.standard_normal((1, 2, 8, 8))
    clip[:, 1] *= 0.1
    frames = viz_nd.guided_frames(clip).astype(float)
    assert np.abs(frames[1] - 128).mean() < 0.2 * np.abs(frames[0] - 128).mean()
    # 2-D guided pictures are the same rule: one frame of a clip of one frame
    np.testing.assert_array_equal(viz_nd.guided_frames(rgb[:, :1])[0],
                                  viz.gradients_to_image(torch.from_numpy(rgb[:, 0])))  # fmt: skip


def test_guided_slices_cut_the_normalised_volume_through_the_index() -> None:
    rng = np.random.default_rng(1)
    g = rng.standard_normal((1, 6, 8, 10))
    g[0, 4, 2, 7] = 40.0  # the magnitude's peak
    full = _by_hand(g)[0]
    picture = viz_nd.guided_slices(g, size=8, labels=False)  # axial 8 x 10 unscaled
    np.testing.assert_array_equal(picture[2:10, 2:12, 0], full[4])
    explicit = viz_nd.guided_slices(g, index=(1, 3, 5), size=8, labels=False)
    np.testing.assert_array_equal(explicit[2:10, 2:12, 1], full[1])
    assert not np.array_equal(explicit, picture)
    with pytest.raises(ValueError, match=r"index must be \(z, y, x\) inside \(6, 8, 10\)"):
        viz_nd.guided_slices(g, index=(6, 0, 0))
    with pytest.raises(ValueError, match="channel-first"):
        viz_nd.guided_slices(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="mode"):
        viz_nd.guided_slices(g, mode="abs")  # type: ignore[arg-type]


def test_guided_signal_plots_the_gradient_under_the_signal() -> None:
    t = np.linspace(0, 1, 100)
    signal = np.stack([np.sin(20 * t), np.cos(3 * t)])
    grad = np.zeros_like(signal)
    grad[0, 60:70] = 1.0
    picture = viz_nd.guided_signal(signal, grad, width=300, height=150, title="x")
    assert picture.shape == (150, 300, 3) and picture.dtype == np.uint8
    # channel 0's curve (matplotlib's first colour, C0) in the lower panel: raised over the
    # samples 60..70 only (the axes span columns 0.10..0.98 of the width)
    c0 = np.abs(picture.astype(int) - [31, 119, 180]).sum(-1) < 60
    rows, cols = np.nonzero(c0[85:])  # the lower panel (rows 85..)
    raised = cols[rows < np.median(rows) - 5]
    x0, x1 = 0.10 * 300 + 0.60 * 0.88 * 300, 0.10 * 300 + 0.70 * 0.88 * 300
    assert raised.size > 10 and raised.min() >= x0 - 3 and raised.max() <= x1 + 3
    with pytest.raises(ValueError, match="the signal's shape"):
        viz_nd.guided_signal(signal, grad[:1])
    with pytest.raises(ValueError, match="width"):
        viz_nd.guided_signal(signal, grad, width=10)
