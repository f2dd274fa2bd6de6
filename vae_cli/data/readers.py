"""Readers of the files users bring: images (one file, or a folder and its sub-folders) and arrays in
one file (.npy, .npz, .pt, .csv). Datasets (image_folder, tensor) and the commands that take user input
(`vae score input=`, `vae reconstruct input=`) all read through here, so a folder means the same
everywhere.

Images
- Files ending in .png .jpg .jpeg .bmp .gif .webp .tif .tiff are images (hidden files and folders are
  not read); other files are ignored, with one line saying how many. Files that cannot be decoded are
  skipped with one warning that says how many there were and names one.
- When every image of a folder sits in a sub-folder, the first-level sub-folder names are labels
  (sorted: the first is label 0); with any image directly in the folder there are no labels.
- Each image is turned upright (its EXIF orientation), converted to grey (L) or RGB with every mode's
  values mapped to 0..255 (see `to_pixels`: 16- and 32-bit grey, floats, palettes, transparency,
  CMYK), the centre region of the target's aspect ratio cropped out and resized to the target size
  (bilinear, antialiased). Multi-frame files (GIF, TIFF) give their first frame.
- Symbolic links are followed, but no folder is read twice (a link back to a folder above is a loop)
  and no file is counted twice (two links to one file, a hard link): each image is one example.

Arrays
- `.npy`: one array.
- `.npz`: the array under key `x` (else the first array); labels under the label column, else `y` or
  `labels` when present.
- `.pt`/`.pth`: a tensor, or a dict of tensors with the same keys as .npz (read with
  `torch.load(weights_only=True)`, so the file cannot run code).
- `.csv`: a header row, then one example per row; every column is a feature except the label column.
  A value that is not a number stops with an error naming its line and column. Without a header (a
  first row of numbers) the columns are named 0, 1, 2, ...
Shapes: (N, D) are N vectors of D features, held as (N, 1, 1, D) images of one row; (N, H, W) are grey
images; (N, C, H, W) (or (N, H, W, C) with C = 1 or 3) are images. uint8 values are pixels in 0..255;
other numbers are used as they are (as float32). Labels are integers, or strings (numbered in sorted
order, like image-folder classes).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from vae_cli.errors import ConfigError, DataError

log = logging.getLogger("vae")

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
PARALLEL_DECODE_FROM = 2000  # fewer images decode faster in this process than with worker start-up


def resolve_path(path: str | None, data_dir: Path, dataset: str) -> Path:
    """dataset.path as given (relative to the working folder), else relative to data_dir."""
    what = "a folder of images" if dataset == "image_folder" else "a .npy, .npz, .pt or .csv file"
    if not path:
        raise ConfigError(f"dataset={dataset} needs dataset.path=<{what}>")
    given = Path(path).expanduser()
    for candidate in (given, data_dir / given):
        if candidate.exists():
            return candidate.resolve()
        if given.is_absolute():
            break
    raise DataError(f"dataset.path={path} does not exist (nor under data_dir={data_dir}): pass {what}")


def find_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under folder, recursively, sorted; hidden files and folders skipped.

    Symbolic links are followed, but a folder reached again (a loop, or two links to one folder) is
    not read again, and a file reached again (through a link, or a hard link) counts once: a real
    folder or file is kept before a link to it, else the first path in sorted order. One warning says
    how many were skipped."""
    seen_dirs = {_identity(folder)}
    found: list[Path] = []
    repeated_dirs = 0
    for root, dirs, files in os.walk(folder, followlinks=True):
        keep = []
        # Real folders claim their place before links to them.
        for name in sorted((d for d in dirs if not d.startswith(".")), key=lambda d: _link_first(root, d)):
            identity = _identity(Path(root) / name)
            if identity in seen_dirs:
                repeated_dirs += 1
                continue
            seen_dirs.add(identity)
            keep.append(name)
        dirs[:] = sorted(keep)
        found += [Path(root) / name for name in files if not name.startswith(".")]
    seen_files: set[tuple] = set()
    images, others, repeated_files = [], [], 0
    for path in sorted(found, key=lambda f: (f.is_symlink(), f)):
        identity = _identity(path)
        if identity in seen_files:
            repeated_files += 1
            continue
        seen_files.add(identity)
        (images if path.suffix.lower() in IMAGE_EXTENSIONS else others).append(path)
    if repeated_dirs or repeated_files:
        log.warning(
            "%s: skipped %d folder(s) and %d file(s) reached a second time through symbolic or hard links "
            "(each is read once)",
            folder,
            repeated_dirs,
            repeated_files,
        )
    return sorted(images), sorted(others)


def _link_first(root: str, name: str) -> tuple[bool, str]:
    """Sorts a folder's entries: real ones first, then links, each by name."""
    return (os.path.islink(os.path.join(root, name)), name)


def _identity(path: Path) -> tuple:
    """What a path leads to: (device, inode) of its target, else (a broken link) its resolved path."""
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)
    except OSError:
        return ("path", str(path.resolve()))


def folder_labels(folder: Path, files: list[Path]) -> tuple[torch.Tensor | None, list[str]]:
    """Labels from first-level sub-folder names (sorted: index = label) when every file is in one."""
    parts = [f.relative_to(folder).parts for f in files]
    if not parts or any(len(p) < 2 for p in parts):
        return None, []
    classes = sorted({p[0] for p in parts})
    index = {name: i for i, name in enumerate(classes)}
    return torch.tensor([index[p[0]] for p in parts], dtype=torch.int64), classes


#: Transparent pixels are composited over black (0): a pixel's colour counts as much as its opacity
#: (premultiplied alpha), so a fully transparent pixel is "no light", whatever colour it happens to
#: store. Black is also the background of the built-in datasets (MNIST, Fashion-MNIST, the synthetic
#: shapes: white on black), so a cut-out object on a transparent background looks like them.
BACKGROUND = 0


def load_image(file: Path, shape: tuple[int, int, int]) -> torch.Tensor | None:
    """One image as uint8 (C, H, W): upright, converted to L or RGB (`to_pixels`), the centre region of
    the target's aspect ratio cropped out and resized to (H, W). None when the file cannot be decoded."""
    c, h, w = shape
    try:
        with Image.open(file) as img:
            img = to_pixels(img, c)
    except Exception:  # noqa: BLE001  not an image, or a broken one: PIL raises many kinds
        return None
    width, height = img.size
    if width * h > height * w:  # too wide: keep the full height
        crop_w, crop_h = height * w / h, height
    else:
        crop_w, crop_h = width, width * h / w
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    img = img.resize((w, h), Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(array.reshape(h, w, c).copy()).permute(2, 0, 1).contiguous()


def to_pixels(img: Image.Image, channels: int) -> Image.Image:
    """An image of any PIL mode as 8-bit grey (L, channels=1) or RGB (channels=3), upright (EXIF).

    - 16- and 32-bit integer grey (I;16, I;16B, I;16L, I): 0..65535 scaled to 0..255 (v / 257,
      rounded; values outside 0..65535 clipped). PIL's own conversion clips at 255 instead, which
      turns a 16-bit image almost white.
    - float grey (F): values in [0, 1] scaled to 0..255; an image with values outside [0, 1] is taken
      to hold 0..255 pixel values (clipped); NaN is 0.
    - bilevel (1): 0 and 255. Palette (P): the palette's colours.
    - transparency (LA, RGBA, PA, La, RGBa, a palette's or a colour key's transparency): composited over
      BACKGROUND, black (see there why).
    - CMYK, YCbCr and the other colour modes: PIL's conversion to RGB.
    - 16-bit RGB(A) PNGs are read by PIL as 8-bit RGB(A) already (their high bytes).
    Grey becomes RGB by repeating it; RGB becomes grey by PIL's luma (ITU-R 601-2)."""
    target = "RGB" if channels == 3 else "L"
    img = _upright(img)
    if img.mode.startswith("I") or img.mode == "F":
        grey = Image.fromarray(_grey_to_8bit(np.asarray(img), img.mode))
        return grey if target == "L" else grey.convert("RGB")
    transparent = img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in img.info
    if img.mode in ("1", "L", "P", "RGB") and not transparent:
        return img.convert(target)
    if transparent:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint32)
        alpha = rgba[..., 3:]
        rgb = (rgba[..., :3] * alpha + BACKGROUND * (255 - alpha) + 127) // 255
        return Image.fromarray(rgb.astype(np.uint8)).convert(target)
    try:
        return img.convert(target)
    except ValueError:  # a mode PIL converts to RGB only (e.g. HSV, LAB)
        return img.convert("RGB").convert(target)


def _upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (phone photos), else as it is."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001  a broken EXIF block: the pixels are still readable
        return img
    return ImageOps.exif_transpose(img) if orientation not in (1, None) else img


def _grey_to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """Integer grey 0..65535 or float grey [0, 1] (else 0..255) -> uint8 0..255 (see `to_pixels`)."""
    x = values.astype(np.float64)
    if mode == "F":
        x = np.nan_to_num(x, nan=0.0, posinf=255.0, neginf=0.0)
        in_unit = x.size == 0 or (x.min() >= 0 and x.max() <= 1)
        x = x * 255.0 if in_unit else x
    else:
        x = x / 257.0  # 65535 -> 255 exactly
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def readable(file: Path) -> bool:
    """A cheap check without decoding: PIL identifies the file and its structure verifies."""
    try:
        with Image.open(file) as img:
            img.verify()
        return True
    except Exception:  # noqa: BLE001
        return False


class _Decode(Dataset):
    def __init__(self, files: list[Path], shape: tuple[int, int, int]) -> None:
        self.files, self.shape = files, shape

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor | None:
        return load_image(self.files[i], self.shape)


def decode_all(
    files: list[Path], shape: tuple[int, int, int], num_workers: int | None = None
) -> tuple[torch.Tensor, list[bool]]:
    """Decode every file once: uint8 (number readable, C, H, W), and which files were readable."""
    from vae_cli.data.loaders import default_num_workers

    workers = default_num_workers() if num_workers is None else num_workers
    if len(files) < PARALLEL_DECODE_FROM or workers == 0:
        decoded = [load_image(f, shape) for f in files]
    else:
        loader = DataLoader(_Decode(files, shape), batch_size=64, num_workers=workers, collate_fn=list)
        decoded = [image for batch in loader for image in batch]
    ok = [image is not None for image in decoded]
    images = [image for image in decoded if image is not None]
    return (torch.stack(images) if images else torch.empty(0, *shape, dtype=torch.uint8)), ok


def drop_unreadable(files: list[Path], ok: list[bool], folder: Path) -> list[Path]:
    """The readable files; one warning for all the others."""
    bad = [f for f, good in zip(files, ok, strict=True) if not good]
    if bad:
        log.warning(
            "skipped %d unreadable image file(s) in %s, e.g. %s",
            len(bad),
            folder,
            bad[0].relative_to(folder) if folder.is_dir() else bad[0].name,
        )
    return [f for f, good in zip(files, ok, strict=True) if good]


@dataclass
class ImageFiles:
    """Readable image files at a path, decoded, with what their folder layout says about them."""

    files: list[Path]
    images: torch.Tensor  # uint8 (N, C, H, W)
    names: list[str]  # the path relative to the folder (the file name for a single file)
    labels: torch.Tensor | None  # from first-level sub-folders, when every image is in one
    label_names: list[str]


def list_images(path: Path, what: str | None = None) -> list[Path]:
    """The image files at `path`: the file itself, or every image under the folder (recursively)."""
    what = what or str(path)
    if not path.is_dir():
        return [path]
    files, others = find_images(path)
    if not files:
        extra = f"; it holds {len(others)} other file(s), e.g. {others[0].name}" if others else ""
        raise DataError(
            f"{what} holds no images (no readable images with the extensions "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))} anywhere under it){extra}"
        )
    if others:
        log.info(
            "ignored %d file(s) without an image extension in %s, e.g. %s",
            len(others),
            path,
            others[0].relative_to(path),
        )
    return files


def describe_files(path: Path, files: list[Path]) -> tuple[list[str], torch.Tensor | None, list[str]]:
    """(names, labels, label names) of image files found at `path`."""
    if not path.is_dir():
        return [f.name for f in files], None, []
    labels, label_names = folder_labels(path, files)
    return [str(f.relative_to(path)) for f in files], labels, label_names


def read_images(
    path: Path, shape: tuple[int, int, int], what: str | None = None, num_workers: int | None = None
) -> ImageFiles:
    """Every readable image at `path` (a file, or a folder searched recursively), decoded to `shape`."""
    files = list_images(path, what)
    images, ok = decode_all(files, shape, num_workers)
    files = drop_unreadable(files, ok, path)
    if not files:
        raise DataError(f"none of the image files in {what or path} could be read (broken or not images)")
    names, labels, label_names = describe_files(path, files)
    return ImageFiles(files, images, names, labels, label_names)


TENSOR_EXTENSIONS = frozenset({".npy", ".npz", ".pt", ".pth", ".csv"})
LABEL_KEYS = ("y", "labels")


def read_tensor_file(
    path: Path, label_column: str | None = None, optional: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """(examples (N, C, H, W) uint8 or float32, labels (N,) int64 or None, label names) from a file.
    With `optional`, a label column the file lacks is ignored instead of an error."""
    suffix = path.suffix.lower()
    if optional and label_column and not _has_labels(path, label_column):
        label_column = None
    if suffix == ".csv":
        data, raw_labels = read_csv(path, label_column)
    elif suffix == ".npy":
        if label_column:
            raise ConfigError(
                f"{path.name} holds one array, so it has no label column: put labels in an .npz "
                f"(keys x and y) or a CSV column, or drop label_column"
            )
        data, raw_labels = _load_npy(path), None
    elif suffix == ".npz":
        data, raw_labels = _from_mapping(_load_npz(path), path, label_column)
    elif suffix in (".pt", ".pth"):
        data, raw_labels = _load_pt(path, label_column)
    else:
        raise DataError(f"{path} is not a .npy, .npz, .pt or .csv file")
    examples = as_examples(data, path)
    labels, label_names = (None, []) if raw_labels is None else to_labels(raw_labels, len(examples), path)
    return examples, labels, label_names


def _has_labels(path: Path, label_column: str) -> bool:
    """Whether a CSV header or an .npz/.pt mapping names `label_column` (unreadable files: True, so that
    reading them explains the problem)."""
    try:
        suffix = path.suffix.lower()
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), [])
            return label_column in [v.strip() for v in header]
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return label_column in archive.files
        if suffix in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            return isinstance(obj, dict) and label_column in obj
        return False
    except Exception:  # noqa: BLE001
        return True


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"cannot read {path} as a .npy array ({_first_line(e)})") from None


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"cannot read {path} as a .npz archive ({_first_line(e)})") from None


def _load_pt(path: Path, label_column: str | None) -> tuple[object, object | None]:
    import pickle
    import zipfile

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as e:
        why = "it holds objects other than tensors" if "weights_only" in str(e) else _first_line(e)
        raise DataError(
            f"cannot read {path} as tensors ({why}); save a tensor or a dict of tensors"
        ) from None
    if isinstance(obj, torch.Tensor):
        if label_column:
            raise ConfigError(f"{path.name} holds one tensor, so it has no labels '{label_column}'")
        return obj, None
    if isinstance(obj, dict):
        return _from_mapping(obj, path, label_column)
    raise DataError(f"{path} holds a {type(obj).__name__}: save a tensor, or a dict with keys x (and y)")


def _from_mapping(arrays: dict, path: Path, label_column: str | None) -> tuple[object, object | None]:
    keys = [str(k) for k in arrays]
    if not keys:
        raise DataError(f"{path} holds no arrays")
    if label_column and label_column not in arrays:
        raise DataError(f"{path} has no '{label_column}' for the labels; its keys are {', '.join(keys)}")
    label_key = label_column or next((k for k in LABEL_KEYS if k in arrays), None)
    data_keys = [k for k in keys if k != label_key]
    if not data_keys:
        raise DataError(f"{path} holds only labels ('{label_key}'): store the data under x")
    data_key = "x" if "x" in arrays else data_keys[0]
    if len(data_keys) > 1 and data_key != "x":
        log.info(
            "%s: using the array '%s' (keys: %s); name the data x to choose",
            path.name,
            data_key,
            ", ".join(keys),
        )
    return arrays[data_key], None if label_key is None else arrays[label_key]


def read_csv(path: Path, label_column: str | None) -> tuple[torch.Tensor, list[str] | None]:
    """A header row, then numbers: (float32 (N, D), the label column's raw strings or None)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [(n, row) for n, row in enumerate(csv.reader(f), start=1) if any(v.strip() for v in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path} as CSV ({_first_line(e)})") from None
    if not rows:
        raise DataError(f"{path} is empty: expected a header row and one row per example")
    columns, has_header = column_names(rows[0][1])
    body = rows[1:] if has_header else rows
    if not body:
        raise DataError(f"{path} has a header but no rows of data")
    if label_column is not None and label_column not in columns:
        raise DataError(
            f"{path} has no column '{label_column}' (dataset.label_column); its columns are {', '.join(columns)}"
        )
    label_at = columns.index(label_column) if label_column is not None else -1
    features = [i for i in range(len(columns)) if i != label_at]
    if not features:
        raise DataError(f"{path} has no feature columns besides the label column '{label_column}'")
    values = np.empty((len(body), len(features)), dtype=np.float32)
    labels: list[str] = []
    for r, (line, row) in enumerate(body):
        if len(row) != len(columns):
            raise DataError(
                f"{path}, line {line}: {len(row)} values, but {len(columns)} columns in the header"
            )
        for j, i in enumerate(features):
            text = row[i].strip()
            try:
                value = float(text)
            except ValueError:
                value = None
            if value is None or not math.isfinite(value):
                what = (
                    "is empty (a missing value)"
                    if not text
                    else f"'{text}' is not a {'number' if value is None else 'finite number'}"
                )
                hint = "" if label_column else " (if it is the label, name it with dataset.label_column)"
                raise DataError(f"{path}, line {line}, column '{columns[i]}': {what}{hint}")
            values[r, j] = value
        if label_at >= 0:
            labels.append(row[label_at].strip())
    return torch.from_numpy(values), (labels if label_at >= 0 else None)


def column_names(first_row: list[str]) -> tuple[list[str], bool]:
    """(the columns' names, whether the first row is a header): a first row of numbers is data, and the
    columns are then named by position, 0, 1, 2, ..."""
    header = [v.strip() for v in first_row]
    if all(_is_number(v) for v in header):
        return [str(i) for i in range(len(header))], False
    return header, True


def csv_columns(path: Path) -> list[str]:
    """A CSV file's column names, read from its first line only (OSError, UnicodeDecodeError or
    csv.Error when it cannot be read)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        first = next((row for row in csv.reader(f) if any(v.strip() for v in row)), [])
    return column_names(first)[0]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def as_examples(data: object, path: Path) -> torch.Tensor:
    """An array -> examples (N, C, H, W): uint8 kept, everything else float32; NaN/inf refused."""
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "biuf":
            raise DataError(f"{path} holds {data.dtype} values: store numbers")
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, torch.Tensor):
        raise DataError(f"{path}: the data is a {type(data).__name__}, not an array")
    if data.dtype.is_complex:
        raise DataError(f"{path} holds complex numbers: store real ones")
    x = data if data.dtype == torch.uint8 else data.to(torch.float32)
    if x.ndim == 2:
        x = x[:, None, None, :]  # vectors: one row of D features
    elif x.ndim == 3:
        x = x[:, None]  # grey images
    elif x.ndim == 4:
        if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
            x = x.permute(0, 3, 1, 2)  # channels last -> channels first
    else:
        raise DataError(
            f"{path} holds an array of shape {tuple(data.shape)}: expected (N, D) vectors, (N, H, W) or "
            f"(N, C, H, W) images"
        )
    if len(x) == 0 or x[0].numel() == 0:
        raise DataError(f"{path} holds no examples (shape {tuple(data.shape)})")
    if x.is_floating_point():
        bad = ~torch.isfinite(x.flatten(1)).all(1)
        if bad.any():
            raise DataError(
                f"{path}: example {int(bad.nonzero()[0])} (0-based) holds NaN or inf, as do {int(bad.sum())} "
                f"in all; fix or drop them"
            )
    return x.contiguous()


def to_labels(raw: object, n: int, path: Path) -> tuple[torch.Tensor, list[str]]:
    """Integer labels as they are; strings numbered in sorted order (their names returned)."""
    if isinstance(raw, list):  # CSV strings: numbers when every one is an integer
        if all(_is_integer(v) for v in raw):
            return torch.tensor([int(float(v)) for v in raw], dtype=torch.int64), []
        names = sorted(set(raw))
        index = {name: i for i, name in enumerate(names)}
        return torch.tensor([index[v] for v in raw], dtype=torch.int64), names
    labels = torch.from_numpy(np.asarray(raw)) if isinstance(raw, np.ndarray) else raw
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or len(labels) != n:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(raw).__name__
        raise DataError(f"{path}: the labels must be one number per example ({n}), got {shape}")
    if labels.is_floating_point():
        if not (torch.isfinite(labels).all() and (labels == labels.round()).all()):
            raise DataError(f"{path}: the labels must be integers (class numbers)")
    elif labels.dtype == torch.bool or labels.dtype.is_complex:
        labels = labels.to(torch.int64)
    return labels.to(torch.int64), []


def _is_integer(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value == int(value)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
