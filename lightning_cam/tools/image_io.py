"""Image files: the one place where lightning-cam reads and writes them.

* Reading: :func:`load_image` (any format OpenCV decodes, as ``(H, W, 3)`` uint8 RGB),
  :func:`collect_images` (files, folders, globs and in-memory arrays as :class:`ImageSource`
  objects with unique names), :func:`as_rgb_uint8` (arrays and tensors as RGB uint8).
* Writing: :func:`save_image` (one picture, atomically), :func:`save_images` (several pictures
  of one image: all of them or none), :func:`write_atomic` (bytes or text, atomically).

A write goes to a hidden temporary file in the destination folder and is moved into place with
``os.replace``: a file is either complete or untouched, also after an error or Ctrl-C.

Example:
    >>> import numpy as np, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> pictures = {os.path.join(folder, f"{k}.jpg"): np.zeros((4, 5, 3), np.uint8)
    ...             for k in ("heatmap", "cam")}
    >>> save_images(pictures)
    >>> sorted(os.listdir(folder)), load_image(os.path.join(folder, "cam.jpg")).shape
    (['cam.jpg', 'heatmap.jpg'], (4, 5, 3))
"""

from __future__ import annotations

import dataclasses
import glob
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np
import torch

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "ImagesArg",
    "as_rgb_uint8",
    "collect_images",
    "encode_image",
    "load_image",
    "save_image",
    "save_images",
    "write_atomic",
]

#: File name extensions taken from folders and globs (explicit file names are always tried).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jp2"}
)

#: Extensions :func:`save_image` writes.
SAVE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

ImageLike = Union[str, "os.PathLike[str]", np.ndarray, torch.Tensor, "ImageSource"]
ImagesArg = Union[ImageLike, Sequence[ImageLike], Mapping[str, ImageLike]]


# ----------------------------------------------------------------------------- reading


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as RGB.

    Grey images are repeated to 3 channels, an alpha channel is dropped, 16-bit images are
    reduced to 8 bits. The format is found from the content (jpg, png, bmp, tiff, webp, ...).

    Args:
        path: the image file.

    Returns:
        ``(H, W, 3)`` ``uint8`` RGB array.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a directory.
        ValueError: the file is not a readable image.

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x.png")
        >>> save_image(p, np.zeros((4, 5, 3), np.uint8)); load_image(p).shape
        (4, 5, 3)
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(2, "image file not found", path)
    if os.path.isdir(path):
        raise IsADirectoryError(21, "expected an image file, got a directory", path)
    data = np.fromfile(path, dtype=np.uint8)
    img = None
    if data.size:
        try:
            img = cv2.imdecode(data, cv2.IMREAD_COLOR)
        except cv2.error:
            img = None
    if img is None:
        raise ValueError(
            f"{path!r} is not a readable image (supported formats: jpg, png, bmp, tiff, webp)"
        )
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def as_rgb_uint8(image: Any, name: str = "image") -> np.ndarray:
    """An in-memory image as ``(H, W, 3)`` uint8 RGB.

    Accepts ``(H, W)``, ``(H, W, 1|3|4)`` arrays and ``(C, H, W)`` tensors, uint8 or floats in
    ``[0, 1]`` (clipped; NaN becomes 0).

    Raises:
        ValueError: Another shape or dtype (the message names the image).
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dim() == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
            image = image.permute(1, 2, 0)
        image = image.numpy()
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(
            f"Image {name!r} has shape {arr.shape}; expected (H, W), (H, W, 3), (H, W, 4) "
            "or a (3, H, W) tensor."
        )
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(
                f"Image {name!r} has dtype {arr.dtype}; expected uint8, or floats in [0, 1]."
            )
        arr = np.clip(np.nan_to_num(arr.astype(np.float32)) * 255.0 + 0.5, 0, 255)
        arr = arr.astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


@dataclass
class ImageSource:
    """One input image: a file (read on demand) or an in-memory array.

    Attributes:
        name: Unique stem used in output file names.
        path: The file, or ``None`` for an in-memory image.
        array: The in-memory image, or ``None`` for a file.
    """

    name: str
    path: Path | None = None
    array: Any = None

    @property
    def label(self) -> str:
        """How the image is reported: its path, or its name."""
        return str(self.path) if self.path is not None else self.name

    def load(self) -> np.ndarray:
        """The image as ``(H, W, 3)`` uint8 RGB.

        Raises:
            FileNotFoundError: The file does not exist.
            ValueError: Not an image (the message names the file), or an unusable array.
        """
        if self.path is not None:
            return load_image(self.path)
        return as_rgb_uint8(self.array, self.name)


def _has_magic(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _folder_images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def collect_images(images: ImagesArg) -> list[ImageSource]:
    """Expand files, folders, globs and arrays into :class:`ImageSource` objects.

    Folders contribute their image files (by extension, not recursive, sorted); globs
    (``"photos/*.jpg"``, ``"**"`` recursive) their matching image files; a file named explicitly
    is always taken (and fails later if it is not an image). Arrays are named ``image0``,
    ``image1``... unless given as a mapping ``{name: array}``; :class:`ImageSource` objects pass
    through (as copies). Names are made unique by adding ``_2``, ``_3``... (``a/cat.jpg`` and
    ``b/cat.png`` become ``cat`` and ``cat_2``).

    Raises:
        FileNotFoundError: A path that is neither a file nor a folder and matches no file as a
            glob, or a folder / glob without images; the message names it.
        TypeError: An entry that is not a path, array or tensor.
    """
    items: list[tuple[str | None, Any]]
    if isinstance(images, Mapping):
        items = [(str(k), v) for k, v in images.items()]
    elif isinstance(images, (str, os.PathLike, np.ndarray, torch.Tensor, ImageSource)):
        items = [(None, images)]
    elif isinstance(images, Sequence):
        items = [(None, v) for v in images]
    else:
        raise TypeError(
            "images must be a path, a folder, a glob, an array/tensor, or a list or dict of "
            f"them; got {type(images).__name__}"
        )
    sources: list[ImageSource] = []
    for index, (key, item) in enumerate(items):
        if isinstance(item, ImageSource):
            sources.append(dataclasses.replace(item, name=key or item.name))
            continue
        if isinstance(item, (np.ndarray, torch.Tensor)):
            sources.append(ImageSource(key or f"image{index}", array=item))
            continue
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(
                f"Each image must be a path, an array or a tensor; got {type(item).__name__}"
            )
        path = Path(item).expanduser()
        if path.is_dir():
            found = _folder_images(path)
            if not found:
                raise FileNotFoundError(
                    f"No image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder "
                    f"{str(path)!r}."
                )
            sources.extend(ImageSource(p.stem, path=p) for p in found)
        elif path.exists():
            sources.append(ImageSource(key or path.stem, path=path))
        elif _has_magic(str(item)):
            matches = sorted(
                Path(m) for m in glob.glob(os.path.expanduser(str(item)), recursive=True)
            )
            found = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
            if not found:
                raise FileNotFoundError(f"No image files match {str(item)!r}.")
            sources.extend(ImageSource(p.stem, path=p) for p in found)
        else:
            raise FileNotFoundError(f"Image not found: {str(path)!r}.")
    seen: dict[str, int] = {}
    for src in sources:
        base = src.name
        if base in seen:
            seen[base] += 1
            candidate = f"{base}_{seen[base]}"
            while candidate in seen:
                seen[base] += 1
                candidate = f"{base}_{seen[base]}"
            src.name = candidate
            seen[candidate] = 1
        else:
            seen[base] = 1
    return sources


# ----------------------------------------------------------------------------- writing


def encode_image(path: str | os.PathLike[str], image: np.ndarray, quality: int = 95) -> bytes:
    """The bytes of the image file ``path`` would hold (format from its extension).

    Args:
        path: The destination; only its extension is used.
        image: ``(H, W, 3)`` (or ``(H, W)``) uint8 RGB.
        quality: 0..100, for ``.jpg`` and ``.webp`` (``.webp`` at 100 is lossless).

    Raises:
        ValueError: Unknown extension, ``quality`` out of range, not a uint8 image.
        OSError: OpenCV cannot encode it (the message names ``path``).
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in SAVE_EXTENSIONS:
        raise ValueError(
            f"cannot save image to {path!r}: unknown extension {ext or '(none)'!r}; "
            f"expected one of {', '.join(SAVE_EXTENSIONS)}"
        )
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise TypeError(f"quality must be an int in [0, 100], got {quality!r}")
    if not 0 <= quality <= 100:
        raise ValueError(f"quality must be in [0, 100], got {quality!r}")
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(
            f"cannot save image to {path!r}: expected (H, W, 3) uint8 RGB, got "
            f"{arr.dtype} {arr.shape} (lightning_cam.tools.viz.save_image converts other images)"
        )
    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif ext == ".webp":  # OpenCV: 1..100 lossy, above 100 lossless
        params = [cv2.IMWRITE_WEBP_QUALITY, 101 if quality == 100 else max(1, int(quality))]
    bgr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr
    try:
        ok, buf = cv2.imencode(ext, bgr, params)
    except cv2.error as e:
        raise OSError(f"could not encode the image as {ext} for {path!r}: {e}") from e
    if not ok:
        raise OSError(f"could not encode the image as {ext} for {path!r}")
    return bytes(buf.tobytes())


def _temp_name(path: str) -> str:
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` through a temporary file in the same
    folder moved into place with ``os.replace``: ``path`` is either complete or untouched, also
    after an error or Ctrl-C (the temporary file is removed)."""
    write_files_atomic({path: data})


def write_files_atomic(files: Mapping[str | os.PathLike[str], bytes | str]) -> None:
    """Write several files, all or none: each to a temporary name first, then every one moved
    into place. On any failure (also Ctrl-C) the temporary files are removed, and so are the
    files already moved into place: none of ``files`` is left, complete or partial.

    Raises:
        OSError: A file cannot be written (the message names it).
    """
    items = [(os.fspath(p), d.encode("utf-8") if isinstance(d, str) else d)
             for p, d in files.items()]
    temps: list[tuple[str, str]] = []
    placed: list[str] = []
    try:
        for path, payload in items:
            if os.path.isdir(path):
                raise IsADirectoryError(21, "cannot write: the path is a directory", path)
            tmp = _temp_name(path)
            try:
                with open(tmp, "xb") as f:
                    temps.append((tmp, path))
                    f.write(payload)
            except OSError as e:
                raise OSError(e.errno, f"could not write: {e.strerror or e}", path) from e
        for tmp, path in temps:
            try:
                os.replace(tmp, path)
            except OSError as e:
                raise OSError(e.errno, f"could not write: {e.strerror or e}", path) from e
            placed.append(path)
    except BaseException:
        for tmp, _ in temps:
            _unlink_quietly(tmp)
        for path in placed:
            _unlink_quietly(path)
        raise


def save_image(path: str | os.PathLike[str], image: np.ndarray, quality: int = 95) -> None:
    """Write an RGB uint8 image to ``.jpg``/``.png`` (also ``.jpeg``, ``.bmp``, ``.tif(f)``,
    ``.webp``), atomically (:func:`write_atomic`). The folder must exist.

    Raises:
        ValueError: Unknown extension, ``quality`` out of range, not a uint8 image.
        OSError: The file cannot be encoded or written (the message names ``path``).
    """
    save_images({path: image}, quality=quality)


def save_images(
    pictures: Mapping[str | os.PathLike[str], np.ndarray], quality: int = 95
) -> None:
    """Write several pictures (of one image, say) all or none (:func:`write_files_atomic`):
    every picture is encoded first, then written; a failure anywhere leaves none of them.

    Args:
        pictures: ``{path: (H, W, 3) uint8 RGB}``.
        quality: As :func:`encode_image`.

    Raises:
        ValueError, OSError: As :func:`encode_image` and :func:`write_files_atomic`.
    """
    write_files_atomic({p: encode_image(p, img, quality) for p, img in pictures.items()})
