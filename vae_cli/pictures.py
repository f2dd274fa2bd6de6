"""Image grids people can read: cells upscaled to a visible size, and labelled when they need words.

    grid_picture(images, ncol, scale)                 a plain grid (samples, interpolations, reconstructions)
    labelled_picture(images, ncol, scale, title=..., row_labels=..., col_labels=..., captions=...)
                                                      a grid with text around it (traversals, extremes)
    stack_pictures([...])                             pictures one above the other (extremes: two halves)
    save_picture(picture, path)                       a PNG, written atomically

`scale` is an integer nearest-neighbour upscale of every cell (pixels stay sharp squares: nothing is
invented between them); `cell_scale(None, h, w)` picks the smallest that makes cells at least
MIN_CELL pixels, so 16x16 or 28x28 images are not postage stamps; `scale=1` keeps the native size.
Text is drawn with PIL's default font, black on white margins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from vae_cli.io import write_atomically

#: the smallest cell (pixels on its shorter side) a default scale gives
MIN_CELL = 64
#: a default scale never makes a grid wider or taller than this (thousands of samples stay a sane file)
MAX_SIDE = 8192
PAD = 2  # pixels between cells, before scaling (torchvision's make_grid default)
GAP = 4  # pixels around text
PAD_VALUE = 0.5  # the grey between the cells of a plain grid
TEXT, MARGIN = 0, 255  # black text on white margins


def cell_scale(scale: int | None, height: int, width: int, rows: int = 1, cols: int = 1) -> int:
    """`scale` when given, else the smallest integer factor that makes a height x width cell at least
    MIN_CELL pixels on its shorter side (1 for images that already are), kept so that a grid of
    rows x cols cells stays within MAX_SIDE pixels."""
    if scale is not None:
        return int(scale)
    wanted = max(1, math.ceil(MIN_CELL / max(1, min(height, width))))
    widest = max(cols * (width + PAD) + PAD, rows * (height + PAD) + PAD)
    return max(1, min(wanted, MAX_SIDE // max(1, widest)))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) floats in [0, 1] (clamped) -> uint8 on the CPU."""
    return images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()


def _pil(array: torch.Tensor) -> Image.Image:
    """A (C, H, W) uint8 tensor with 1 or 3 channels as a PIL image."""
    if array.shape[0] == 1:
        return Image.fromarray(array[0].numpy(), mode="L")
    return Image.fromarray(array.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


def _upscaled(picture: Image.Image, scale: int) -> Image.Image:
    if scale == 1:
        return picture
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def grid_picture(images: torch.Tensor, ncol: int, scale: int | None = None) -> Image.Image:
    """torchvision's grid (`ncol` images a row, 2 grey pixels between them), every pixel of it made a
    scale x scale square: the picture is exactly `scale` times make_grid's in each direction."""
    from torchvision.utils import make_grid

    _, _, h, w = images.shape
    ncol = max(1, min(ncol, len(images)))
    s = cell_scale(scale, h, w, math.ceil(len(images) / ncol), ncol)
    grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=ncol, padding=PAD, pad_value=PAD_VALUE)
    grid = grid[:1] if images.shape[1] == 1 else grid  # make_grid repeats one channel three times
    return _upscaled(_pil(to_uint8(grid[None])[0]), s)


FONT_SIZE = 12  # PIL's default font (Aileron, with FreeType) at this size; its bitmap font without


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow before 10.1: the bitmap font only
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> tuple[int, int]:
    if not text:
        return 0, 0
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def labelled_picture(
    images: torch.Tensor,
    ncol: int,
    scale: int | None = None,
    *,
    title: str | Sequence[str] = (),
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    captions: Sequence[str | None] | None = None,
) -> Image.Image:
    """A grid of `images` (N, C, H, W in [0, 1]), `ncol` a row, with text in white margins:

    title        lines above everything
    col_labels   one per column, above the first row (e.g. the z value of a traversal's column)
    row_labels   one per row, left of it (e.g. the latent dimension and its KL)
    captions     one per image (None or "" for none), in a strip above its row (e.g. its score)
    """
    n, c, h, w = images.shape
    ncol = max(1, min(ncol, n))
    nrows = math.ceil(n / ncol)
    s = cell_scale(scale, h, w, nrows, ncol)
    cell_h, cell_w, pad = h * s, w * s, PAD
    mode = "L" if c == 1 else "RGB"
    font = _font()
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    line_h = _text_size(measure, "Ag0-", font)[1] + GAP
    titles = [title] if isinstance(title, str) else list(title)
    captions = list(captions) if captions is not None else [None] * n
    row_labels = list(row_labels) if row_labels is not None else []
    col_labels = list(col_labels) if col_labels is not None else []

    # the widest text of a column (a label or a caption) widens every cell of that column's slot
    slot_w = max([cell_w] + [_text_size(measure, t or "", font)[0] + GAP for t in col_labels + captions])
    left = max([0] + [_text_size(measure, t, font)[0] + 2 * GAP for t in row_labels]) or pad
    top = len(titles) * line_h + (line_h if col_labels else 0) + pad
    caption_rows = [any(captions[r * ncol : (r + 1) * ncol]) for r in range(nrows)]
    row_tops, y = [], top
    for r in range(nrows):
        y += line_h if caption_rows[r] else 0
        row_tops.append(y)
        y += cell_h + pad
    width = max(
        left + ncol * (slot_w + pad),
        max([0] + [_text_size(measure, t, font)[0] + 2 * GAP for t in titles]),
    )
    canvas = Image.new(mode, (width, y), MARGIN if mode == "L" else (MARGIN,) * 3)
    draw = ImageDraw.Draw(canvas)
    ink = TEXT if mode == "L" else (TEXT,) * 3

    for i, t in enumerate(titles):
        draw.text((GAP, i * line_h + GAP // 2), t, fill=ink, font=font)
    cells = to_uint8(images)
    for i in range(n):
        r, k = divmod(i, ncol)
        x0 = left + k * (slot_w + pad) + (slot_w - cell_w) // 2
        canvas.paste(_upscaled(_pil(cells[i]), s), (x0, row_tops[r]))
        if captions[i]:
            tw, _ = _text_size(draw, captions[i], font)
            cx = left + k * (slot_w + pad) + (slot_w - tw) // 2
            draw.text((cx, row_tops[r] - line_h + GAP // 2), captions[i], fill=ink, font=font)
    for k, t in enumerate(col_labels[:ncol]):
        tw, _ = _text_size(draw, t, font)
        cx = left + k * (slot_w + pad) + (slot_w - tw) // 2
        draw.text((cx, len(titles) * line_h + GAP // 2), t, fill=ink, font=font)
    for r, t in enumerate(row_labels[:nrows]):
        _, th = _text_size(draw, t, font)
        draw.text((GAP, row_tops[r] + (cell_h - th) // 2), t, fill=ink, font=font)
    return canvas


def stack_pictures(pictures: Sequence[Image.Image], gap: int = 2 * GAP) -> Image.Image:
    """Pictures one above the other, left-aligned, on white."""
    mode = "RGB" if any(p.mode != "L" for p in pictures) else "L"
    width = max(p.width for p in pictures)
    height = sum(p.height for p in pictures) + gap * (len(pictures) - 1)
    canvas = Image.new(mode, (width, height), MARGIN if mode == "L" else (MARGIN,) * 3)
    y = 0
    for p in pictures:
        canvas.paste(p.convert(mode), (0, y))
        y += p.height + gap
    return canvas


def shown_and_input(
    images: torch.Tensor, binarize: str, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(what a picture shows as the original: the real image in [0, 1], never binarised; what the model
    is given: binarised as in training, x ~ Bern(intensity) drawn with `generator`, when `binarize` is
    static or dynamic). Every picture of originals above reconstructions (reconstruct, score's
    extremes.png, TensorBoard's val/reconstructions) shows the first above the reconstruction of the
    second."""
    from vae_cli.data.loaders import prepare_batch

    binarize = "dynamic" if binarize in ("static", "dynamic") else binarize
    return prepare_batch(images, "none"), prepare_batch(images, binarize, generator)


def save_picture(picture: Image.Image, path: Path) -> None:
    """The picture as a PNG at `path`, written atomically."""
    write_atomically(Path(path), lambda f: picture.save(f, format="PNG"))
