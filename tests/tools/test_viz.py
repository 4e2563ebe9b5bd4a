"""viz: colours in RGB order, exact blends, grid arithmetic, drawing, atomic file writes."""

import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_cam.tools import viz

# Colormap endpoints in RGB, from the colormaps' definitions (not from OpenCV):
# jet runs from dark blue (0, 0, 0.5) to dark red (0.5, 0, 0); viridis from #440154 to #fde725.
JET_LOW, JET_HIGH = [0, 0, 128], [128, 0, 0]
VIRIDIS_LOW, VIRIDIS_HIGH = [68, 1, 84], [253, 231, 37]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def image(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------- colormaps


def test_colormaps_registry() -> None:
    for name in ("jet", "turbo", "viridis", "inferno", "magma", "hot", "plasma"):
        assert name in viz.COLORMAPS
    assert viz.COLORMAPS["jet"] == cv2.COLORMAP_JET


@pytest.mark.parametrize(
    ("colormap", "low", "high"),
    [("jet", JET_LOW, JET_HIGH), ("viridis", VIRIDIS_LOW, VIRIDIS_HIGH)],
)
def test_colorize_endpoints_in_rgb_order(colormap: str, low: list, high: list) -> None:
    cam = np.array([[0.0, 1.0]])
    rgb = viz.colorize(cam, colormap)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 2, 3)
    assert rgb[0, 0].tolist() == low
    assert rgb[0, 1].tolist() == high


def test_colorize_default_is_jet_and_high_is_red() -> None:
    cam = np.linspace(0, 1, 256).reshape(16, 16)
    rgb = viz.colorize(cam).astype(int)
    assert rgb[0, 0].tolist() == JET_LOW
    assert rgb[-1, -1].tolist() == JET_HIGH
    # jet: blue dominates the low end, red the high end
    assert rgb[0, 0, 2] > rgb[0, 0, 0] and rgb[-1, -1, 0] > rgb[-1, -1, 2]


def test_colorize_clips_handles_nan_and_accepts_tensors() -> None:
    cam = np.array([[-3.0, 0.0, np.nan], [1.0, 7.0, 0.5]])
    rgb = viz.colorize(cam)
    assert rgb[0, 0].tolist() == rgb[0, 1].tolist() == rgb[0, 2].tolist() == JET_LOW
    assert rgb[1, 0].tolist() == rgb[1, 1].tolist() == JET_HIGH
    from_tensor = viz.colorize(torch.from_numpy(cam).float().unsqueeze(0))  # (1, H, W)
    np.testing.assert_array_equal(from_tensor, rgb)
    levels = viz.colorize(np.array([[0, 255]], dtype=np.uint8))  # uint8 = levels 0..255
    assert levels[0, 0].tolist() == JET_LOW and levels[0, 1].tolist() == JET_HIGH


def test_colorize_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown colormap 'jett'.*did you mean 'jet'"):
        viz.colorize(np.zeros((2, 2)), "jett")
    with pytest.raises(ValueError, match=r"2-D.*\(2, 3, 4\)"):
        viz.colorize(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="list"):
        viz.colorize([[0.0]])  # type: ignore[arg-type]


# -------------------------------------------------------------------------- to_uint8_image


def test_to_uint8_image_undoes_normalisation(image: np.ndarray) -> None:
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    back = viz.to_uint8_image(x, mean=mean, std=std)
    assert back.dtype == np.uint8 and back.shape == image.shape
    assert np.abs(back.astype(int) - image).max() <= 1
    # values beyond [0, 1] after un-normalising are clipped, not wrapped
    assert viz.to_uint8_image(torch.full((3, 2, 2), 100.0), mean=mean, std=std).min() == 255


def test_to_uint8_image_passthrough_and_scaling(image: np.ndarray) -> None:
    out = viz.to_uint8_image(image)
    np.testing.assert_array_equal(out, image)
    assert not np.shares_memory(out, image)  # a copy: safe to draw on
    np.testing.assert_array_equal(
        viz.to_uint8_image(torch.from_numpy(image).permute(2, 0, 1)), image
    )
    unit = viz.to_uint8_image(np.array([[0.0, 0.5, 1.0]]))  # (H, W) in [0, 1]: * 255
    assert unit.shape == (1, 3, 3) and unit[0, :, 0].tolist() == [0, 128, 255]
    other = viz.to_uint8_image(np.array([[-2.0, 0.0, 2.0]]))  # min-max
    assert other[0, :, 1].tolist() == [0, 128, 255]
    assert viz.to_uint8_image(np.full((2, 2), 5.0)).max() == 0  # constant outside [0, 1]
    assert viz.to_uint8_image(np.array([[np.nan, 1.0]]))[0, :, 0].tolist() == [0, 255]
    assert viz.to_uint8_image(np.array([[3, 200]], dtype=np.int64))[0, :, 0].tolist() == [3, 200]


def test_to_uint8_image_channels(image: np.ndarray) -> None:
    grey = viz.to_uint8_image(torch.tensor([[[0.0, 1.0]]]))  # (1, H, W)
    assert grey.shape == (1, 2, 3) and grey[0, 1].tolist() == [255, 255, 255]
    rgba = np.dstack([image, np.zeros(image.shape[:2], np.uint8)])
    np.testing.assert_array_equal(viz.to_uint8_image(rgba), image)
    batch = torch.from_numpy(image).permute(2, 0, 1)[None]  # (1, C, H, W)
    np.testing.assert_array_equal(viz.to_uint8_image(batch), image)


def test_to_uint8_image_errors(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"\(3, 24, 32\).*channel-first.*to_hwc"):
        viz.to_uint8_image(image.transpose(2, 0, 1).copy())
    with pytest.raises(TypeError, match="uint8"):
        viz.to_uint8_image(image, mean=[0.5] * 3, std=[0.2] * 3)
    with pytest.raises(ValueError, match=r"mean.*\(3\).*2 values"):
        viz.to_uint8_image(image.astype(np.float32), mean=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"\(5, 4, 4\)"):
        viz.to_uint8_image(torch.zeros(5, 4, 4))


def test_chw_hwc_round_trip(image: np.ndarray) -> None:
    chw = viz.to_chw_tensor(image)
    assert chw.dtype == torch.uint8 and chw.shape == (3, 24, 32)
    np.testing.assert_array_equal(chw[1].numpy(), image[:, :, 1])
    np.testing.assert_array_equal(viz.to_hwc(chw), image)
    assert viz.to_hwc(np.zeros((4, 5), np.float32)).shape == (4, 5, 1)
    with pytest.raises(ValueError, match="channel-first"):
        viz.to_hwc(image)


# ---------------------------------------------------------------------------------- overlay


def test_overlay_alpha_extremes_and_blend(image: np.ndarray, rng: np.random.Generator) -> None:
    cam = rng.random((24, 32))
    heat = viz.colorize(cam)
    np.testing.assert_array_equal(viz.overlay(image, cam, alpha=0.0), image)
    np.testing.assert_array_equal(viz.overlay(image, cam, alpha=1.0), heat)
    expected = np.round(0.75 * image.astype(float) + 0.25 * heat.astype(float))
    assert np.abs(viz.overlay(image, cam, alpha=0.25).astype(float) - expected).max() <= 1


def test_overlay_resizes_cam_bilinearly(image: np.ndarray, rng: np.random.Generator) -> None:
    small = rng.random((6, 8))
    # independent formulation: torch's bilinear upsampling (half-pixel centres, like OpenCV)
    big = F.interpolate(
        torch.from_numpy(small)[None, None], size=(24, 32), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    got = viz.overlay(image, small, alpha=1.0).astype(int)
    want = viz.colorize(big).astype(int)
    assert np.abs(got - want).max() <= 12  # one colormap level is <= ~8 per channel in jet
    assert np.mean(np.abs(got - want)) < 0.5
    assert viz.overlay(image, torch.ones(1, 3, 3), alpha=1.0)[5, 5].tolist() == JET_HIGH


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_overlay_rejects_bad_alpha(image: np.ndarray, alpha: float) -> None:
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        viz.overlay(image, np.zeros((2, 2)), alpha=alpha)


def test_overlay_rejects_non_number_alpha(image: np.ndarray) -> None:
    with pytest.raises(TypeError, match="alpha"):
        viz.overlay(image, np.zeros((2, 2)), alpha=True)


# -------------------------------------------------------------------------------- gradients


def test_gradients_to_image_zero_is_grey_or_black() -> None:
    grey = viz.gradients_to_image(torch.zeros(3, 5, 5))
    assert grey.dtype == np.uint8 and (grey == 128).all()
    assert (viz.gradients_to_image(torch.zeros(3, 5, 5), mode="minmax") == 0).all()
    nan = torch.full((3, 5, 5), float("nan"))
    assert (viz.gradients_to_image(nan) == 128).all()


def test_gradients_to_image_formulas(rng: np.random.Generator) -> None:
    g = rng.normal(0, 1e-3, size=(6, 7, 3))
    x = (g - g.mean()) / (g.std() + 1e-8) * 0.1 + 0.5
    want = np.round(np.clip(x, 0, 1) * 255)
    np.testing.assert_allclose(viz.gradients_to_image(g), want, atol=1)
    mm = np.round((g - g.min()) / (g.max() - g.min()) * 255)
    np.testing.assert_allclose(viz.gradients_to_image(g, mode="minmax"), mm, atol=1)
    # a torch (C, H, W) gradient gives the same image as the numpy (H, W, C) one
    chw = torch.from_numpy(g).permute(2, 0, 1)
    np.testing.assert_array_equal(viz.gradients_to_image(chw), viz.gradients_to_image(g))
    grey = viz.gradients_to_image(torch.from_numpy(g[:, :, :1]).permute(2, 0, 1))
    assert grey.shape == (6, 7, 3) and (grey[..., 0] == grey[..., 2]).all()
    with pytest.raises(ValueError, match="'abs'"):
        viz.gradients_to_image(g, mode="abs")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- grid


def test_make_grid_size_arithmetic_and_placement() -> None:
    tiles = [np.full((10, 20, 3), i * 40, np.uint8) for i in range(5)]
    grid = viz.make_grid(tiles, ncol=2, padding=1, pad_value=7)
    assert grid.shape == (3 * 11 + 1, 2 * 21 + 1, 3)
    assert (grid[1:11, 22:42] == 40).all()  # tile 1: row 0, column 1
    assert (grid[23:33, 1:21] == 160).all()  # tile 4: row 2, column 0
    assert (grid[23:33, 22:42] == 7).all()  # empty cell
    assert (grid[0] == 7).all() and (grid[:, 21] == 7).all()
    auto = viz.make_grid(tiles, padding=0)  # ncol = ceil(sqrt(5)) = 3 -> 2 rows
    assert auto.shape == (20, 60, 3)
    assert viz.make_grid(tiles[:2], ncol=9, padding=0).shape == (10, 40, 3)
    coloured = viz.make_grid(tiles[:1], pad_value=(1, 2, 3))
    assert coloured[0, 0].tolist() == [1, 2, 3]


def test_make_grid_resizes_to_first() -> None:
    tiles = [np.zeros((8, 8, 3), np.uint8), np.full((16, 32, 3), 200, np.uint8)]
    grid = viz.make_grid(tiles, ncol=2, padding=0)
    assert grid.shape == (8, 16, 3) and (grid[:, 8:] == 200).all()


def test_make_grid_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        viz.make_grid([])
    with pytest.raises(ValueError, match="ncol.*0"):
        viz.make_grid([np.zeros((2, 2, 3), np.uint8)], ncol=0)
    with pytest.raises(TypeError, match="list of images"):
        viz.make_grid(np.zeros((2, 2, 2, 3), np.uint8))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ label


@pytest.mark.parametrize("size", [64, 512])
def test_draw_label_strip_and_text(size: int) -> None:
    img = np.full((size, size, 3), 100, np.uint8)
    before = img.copy()
    out = viz.draw_label(img, "gradcam++ layer4", color=(255, 255, 255))
    np.testing.assert_array_equal(img, before)  # input untouched
    changed = np.nonzero((out != img).any(axis=(1, 2)))[0]
    strip = changed.max() + 1
    assert changed.min() == 0 and 8 <= strip <= 0.3 * size  # a strip at the top, not too big
    assert (out[strip:] == 100).all()
    assert (out[:strip] == 0).any() and (out[:strip] > 200).all(axis=2).any()  # bg and text
    bottom = viz.draw_label(img, "x", position="bottom")
    assert (bottom[: size // 2] == 100).all() and (bottom[-1] == 0).any()


def test_draw_label_long_text_fits_and_no_background() -> None:
    img = np.full((64, 64, 3), 100, np.uint8)
    out = viz.draw_label(img, "a label much too long for a sixty-four pixel tile")
    strip = np.nonzero((out != img).any(axis=(1, 2)))[0].max() + 1
    assert strip <= 20
    # the text stays inside the image: the last column is background, not glyph
    assert (out[:strip, -1] == 0).all()
    plain = viz.draw_label(img, "ok", background=None)
    assert not (plain == 0).all(axis=(1, 2)).any()  # no solid strip
    assert (plain > 200).all(axis=2).any() and (plain < 50).all(axis=2).any()  # text, outline
    with pytest.raises(ValueError, match="'middle'"):
        viz.draw_label(img, "x", position="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="color"):
        viz.draw_label(img, "x", color=(300, 0, 0))
    with pytest.raises(TypeError, match="str"):
        viz.draw_label(img, 3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ boxes


def test_draw_boxes_places_boxes_and_captions() -> None:
    img = np.full((100, 120, 3), 50, np.uint8)
    boxes = np.array([[20, 40, 60, 90], [70, 30, 110, 80], [5, 0, 30, 20]])
    out = viz.draw_boxes(img, boxes, labels=["cat", "dog", "cat"], scores=[0.87, 0.5, 0.1])
    np.testing.assert_array_equal(img, np.full((100, 120, 3), 50, np.uint8))
    c0, c1, c2 = (tuple(out[60, 20]), tuple(out[60, 70]), tuple(out[10, 5]))
    assert c0 == c2 != c1  # one colour per label
    assert c0 != (50, 50, 50)
    for x1, y1, x2, y2 in boxes[:2]:
        assert (out[y1 + 5 : y2 - 5, x1 + 5 : x2 - 5] == 50).all()  # inside untouched
        assert (out[y2, x1:x2] == out[y2, x1]).all()  # bottom edge drawn in one colour
    # the caption sits just above the first box, not inside it
    assert (out[30:40, 20:40] != 50).any(axis=2).mean() > 0.5
    tensor = viz.draw_boxes(
        img, torch.from_numpy(boxes).float(), ["cat", "dog", "cat"], torch.tensor([0.87, 0.5, 0.1])
    )
    np.testing.assert_array_equal(tensor, out)
    red = viz.draw_boxes(img, boxes[:1], color=(255, 0, 0), thickness=2)
    assert red[90, 40].tolist() == [255, 0, 0] and red[89, 40].tolist() == [255, 0, 0]
    np.testing.assert_array_equal(viz.draw_boxes(img, np.zeros((0, 4))), img)


def test_draw_boxes_errors() -> None:
    img = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match=r"x1 <= x2.*not x, y, w, h"):
        viz.draw_boxes(img, np.array([[10, 10, 5, 5]]))
    with pytest.raises(ValueError, match=r"\(N, 4\).*\(1, 3\)"):
        viz.draw_boxes(img, np.array([[1, 2, 3]]))
    with pytest.raises(ValueError, match=r"labels.*\(1\), got 2"):
        viz.draw_boxes(img, np.array([[1, 2, 3, 4]]), labels=["a", "b"])
    with pytest.raises(ValueError, match=r"scores.*\(1\), got 2"):
        viz.draw_boxes(img, np.array([[1, 2, 3, 4]]), scores=[0.1, 0.2])


# ------------------------------------------------------------------------------------ sheet


def test_annotate_sheet_layout_and_labels() -> None:
    tile = np.full((64, 80, 3), 120, np.uint8)
    rows = [[tile, tile, tile], [tile, tile]]
    plain = viz.annotate_sheet(rows)
    pad = 2
    assert plain.shape == (pad + 2 * (64 + pad), pad + 3 * (80 + pad), 3)
    assert (plain[pad : pad + 64, pad : pad + 80] == 120).all()
    assert (plain[pad + 66 :, pad + 2 * 82 :] == 255).all()  # missing cell stays white
    sheet = viz.annotate_sheet(rows, ["resnet18", "vgg16"], ["heatmap", "overlay", "guided"])
    assert sheet.shape[0] > plain.shape[0] and sheet.shape[1] > plain.shape[1]
    header_h = sheet.shape[0] - plain.shape[0]
    label_w = sheet.shape[1] - plain.shape[1]
    assert (sheet[:header_h, label_w:] < 128).any()  # dark header text
    assert (sheet[header_h:, :label_w] < 128).any()  # dark row-label text
    assert (
        sheet[header_h + pad : header_h + pad + 64, label_w + pad : label_w + pad + 80] == 120
    ).all()
    with pytest.raises(ValueError, match=r"row_labels.*\(2\), got 1"):
        viz.annotate_sheet(rows, row_labels=["a"])
    with pytest.raises(ValueError, match=r"col_labels.*\(3\)"):
        viz.annotate_sheet(rows, col_labels=["a", "b"])
    with pytest.raises(TypeError, match="row"):
        viz.annotate_sheet([tile])  # type: ignore[list-item]


# ------------------------------------------------------------------------------------ files


def test_save_load_round_trip(tmp_path, image: np.ndarray) -> None:
    png = tmp_path / "x.png"
    viz.save_image(png, image)
    np.testing.assert_array_equal(viz.load_image(png), image)
    smooth = cv2.GaussianBlur(image, (7, 7), 3)  # jpeg is close on smooth content
    jpg = tmp_path / "x.JPG"
    viz.save_image(jpg, smooth, quality=95)
    back = viz.load_image(str(jpg)).astype(int)
    assert back.shape == smooth.shape and np.abs(back - smooth).mean() < 3
    # RGB order is kept on disk: OpenCV reads the file as BGR
    assert (cv2.imread(str(png))[..., ::-1] == image).all()
    assert sorted(os.listdir(tmp_path)) == ["x.JPG", "x.png"]  # no temporary files left


@pytest.mark.parametrize("ext", [".bmp", ".tiff", ".webp"])
def test_save_load_other_formats(tmp_path, image: np.ndarray, ext: str) -> None:
    viz.save_image(tmp_path / f"x{ext}", image, quality=100)
    back = viz.load_image(tmp_path / f"x{ext}").astype(int)
    assert np.abs(back - image).max() == 0  # webp at quality 100 is lossless


def test_save_image_unknown_extension_writes_nothing(tmp_path, image: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"'\.gif'.*\.jpg"):
        viz.save_image(tmp_path / "x.gif", image)
    with pytest.raises(ValueError, match="none"):
        viz.save_image(tmp_path / "x", image)
    with pytest.raises(ValueError, match="quality"):
        viz.save_image(tmp_path / "x.jpg", image, quality=101)
    assert os.listdir(tmp_path) == []


def test_save_image_failures_leave_no_file(tmp_path, image: np.ndarray, monkeypatch) -> None:
    target = tmp_path / "a_dir.png"
    target.mkdir()
    with pytest.raises(OSError, match="a_dir.png"):
        viz.save_image(target, image)
    assert os.listdir(tmp_path) == ["a_dir.png"] and os.listdir(target) == []
    with pytest.raises(FileNotFoundError, match="missing"):
        viz.save_image(tmp_path / "missing" / "x.png", image)

    # a failure at the last step keeps the old file intact and removes the temporary one
    old = tmp_path / "old.png"
    viz.save_image(old, image)
    before = old.read_bytes()

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match=r"old\.png"):
        viz.save_image(old, 255 - image)
    monkeypatch.undo()
    assert old.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["a_dir.png", "old.png"]


def test_load_image_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.png"):
        viz.load_image(tmp_path / "nope.png")
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    with pytest.raises(ValueError, match=r"notes\.png.*not a readable image"):
        viz.load_image(text)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable image"):
        viz.load_image(empty)
    with pytest.raises(IsADirectoryError):
        viz.load_image(tmp_path)


def test_load_image_grey_and_rgba_become_rgb(tmp_path, image: np.ndarray) -> None:
    grey = image[:, :, 0]
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    loaded = viz.load_image(tmp_path / "g.png")
    assert loaded.shape == (24, 32, 3) and (loaded == grey[:, :, None]).all()
    bgra = np.dstack([image[..., ::-1], np.full(grey.shape, 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    np.testing.assert_array_equal(viz.load_image(tmp_path / "a.png"), image)


# ------------------------------------------------------------------------- pixel checks


@pytest.mark.parametrize(("colormap", "low", "high"), [("jet", JET_LOW, JET_HIGH),
                                                       ("viridis", VIRIDIS_LOW, VIRIDIS_HIGH)])
def test_overlay_peak_has_the_colormaps_top_colour(
    image: np.ndarray, colormap: str, low: list, high: list
) -> None:
    cam = np.zeros((24, 32))
    cam[5, 7] = 1.0
    full = viz.overlay(image, cam, alpha=1.0, colormap=colormap)
    assert full[5, 7].tolist() == high
    rest = np.ones((24, 32), bool)
    rest[5, 7] = False
    assert (full[rest] == low).all()
    half = viz.overlay(image, cam, alpha=0.5, colormap=colormap).astype(int)
    want = np.round(0.5 * image[5, 7].astype(float) + 0.5 * np.array(high))
    assert np.abs(half[5, 7] - want).max() <= 1
    assert np.abs(half[rest] - np.round(0.5 * image[rest] + 0.5 * np.array(low))).max() <= 1


def test_draw_boxes_one_pixel_outline_exactly() -> None:
    img = np.zeros((20, 30, 3), np.uint8)
    boxes = np.array([[2, 3, 9, 12], [15, 5, 40, 25]])  # the second one is clipped to the image
    out = viz.draw_boxes(img, boxes, color=[(255, 0, 0), (0, 0, 255)], thickness=1)
    want = np.zeros_like(img)
    for (x1, y1, x2, y2), c in (((2, 3, 9, 12), (255, 0, 0)), ((15, 5, 29, 19), (0, 0, 255))):
        want[y1, x1 : x2 + 1] = want[y2, x1 : x2 + 1] = c
        want[y1 : y2 + 1, x1] = want[y1 : y2 + 1, x2] = c
    np.testing.assert_array_equal(out, want)


def test_annotate_sheet_puts_each_tile_in_its_cell() -> None:
    tiles = [np.full((10, 12, 3), 20 * (k + 1), np.uint8) for k in range(5)]
    rows = [tiles[:2], tiles[2:5]]
    sheet = viz.annotate_sheet(rows)
    pad = 2
    k = 0
    for r, row in enumerate(rows):
        for c in range(len(row)):
            y, x = pad + r * (10 + pad), pad + c * (12 + pad)
            assert (sheet[y : y + 10, x : x + 12] == 20 * (k + 1)).all(), (r, c)
            k += 1
    assert (sheet[pad : pad + 10, pad + 2 * 14 :] == 255).all()  # row 0 has no third cell
