"""Images are read as what they show: every PIL mode decodes to the right uint8 values (not just the
right shape), transparency is composited over black, EXIF orientation is applied; and a folder's
symbolic links (a loop, two links to one folder or file, a hard link) count each image once."""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vae_cli.config import DatasetConfig
from vae_cli.data import create_dataset
from vae_cli.data.readers import BACKGROUND, find_images, load_image


def decoded(path: Path, channels: int) -> np.ndarray:
    """The file as load_image gives it at its own size: (H, W) grey or (H, W, 3) RGB, uint8."""
    with Image.open(path) as img:
        width, height = img.size
    x = load_image(path, (channels, height, width))
    assert x is not None, path
    array = x.permute(1, 2, 0).numpy()
    return array[..., 0] if channels == 1 else array


def luma(rgb: list[tuple[int, int, int]]) -> list[int]:
    """PIL's RGB -> L: (19595 R + 38470 G + 7471 B + 2^15) >> 16 (ITU-R 601-2)."""
    return [(19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16 for r, g, b in rgb]


def write_png16(path: Path, pixels: np.ndarray, color_type: int) -> Path:
    """A 16-bit PNG written by hand (PIL writes none in colour): pixels (H, W, C) uint16; color_type
    0 grey, 2 RGB, 4 grey + alpha, 6 RGBA."""
    h, w = pixels.shape[:2]
    raw = b"".join(b"\x00" + pixels[r].astype(">u2").tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


# --- grey of more than 8 bits: scaled, not clipped -------------------------------------------------------

GREY16 = [0, 1000, 32768, 65535]
GREY16_AS_8BIT = [0, 4, 128, 255]  # v / 257, rounded (PIL's own convert("L") gives 0, 255, 255, 255)


def test_16_bit_grey_png_is_scaled_not_clipped_to_white(tmp_path: Path) -> None:
    path = tmp_path / "grey16.png"
    Image.fromarray(np.array([GREY16], dtype=np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    assert decoded(path, 1).tolist() == [GREY16_AS_8BIT]
    assert decoded(path, 3).tolist() == [[[v] * 3 for v in GREY16_AS_8BIT]]  # grey repeated


def test_16_bit_grey_png_written_by_another_program(tmp_path: Path) -> None:
    path = write_png16(tmp_path / "g16.png", np.array([[[0], [25700], [65535]]], dtype=np.uint16), 0)
    assert decoded(path, 1).tolist() == [[0, 100, 255]]


def test_16_bit_big_endian_grey_tiff(tmp_path: Path) -> None:
    path = tmp_path / "grey16b.tif"
    big_endian = np.array(GREY16, dtype=">u2").tobytes()
    Image.frombytes("I;16B", (4, 1), big_endian).save(path)
    assert Image.open(path).mode == "I;16B"
    assert decoded(path, 1).tolist() == [GREY16_AS_8BIT]


def test_32_bit_integer_grey_is_scaled_from_0_65535_and_clipped_above(tmp_path: Path) -> None:
    path = tmp_path / "grey32.tif"
    Image.fromarray(np.array([[0, 1000, 65535, 100000]], dtype=np.int32)).save(path)
    assert Image.open(path).mode == "I"
    assert decoded(path, 1).tolist() == [[0, 4, 255, 255]]


def test_float_grey_in_0_1_is_scaled_and_beyond_it_taken_as_0_255(tmp_path: Path) -> None:
    unit, wide = tmp_path / "unit.tif", tmp_path / "wide.tif"
    Image.fromarray(np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)).save(unit)
    Image.fromarray(np.array([[0.0, 100.0, 255.0, 300.0]], dtype=np.float32)).save(wide)
    assert Image.open(unit).mode == "F"
    assert decoded(unit, 1).tolist() == [[0, 64, 128, 255]]
    assert decoded(wide, 1).tolist() == [[0, 100, 255, 255]]


# --- 8-bit modes without transparency ----------------------------------------------------------------------


def test_bilevel_is_0_and_255(tmp_path: Path) -> None:
    path = tmp_path / "bits.png"
    Image.fromarray(np.array([[True, False, True, False]])).save(path)
    assert Image.open(path).mode == "1"
    assert decoded(path, 1).tolist() == [[255, 0, 255, 0]]


PALETTE = [(0, 0, 0), (255, 0, 0), (10, 200, 30)]


def palette_image() -> Image.Image:
    img = Image.new("P", (3, 1))
    img.putpalette([v for colour in PALETTE for v in colour])
    img.putdata([0, 1, 2])
    return img


def test_palette_gives_its_colours(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    palette_image().save(path)
    assert Image.open(path).mode == "P"
    assert decoded(path, 3).tolist() == [[list(c) for c in PALETTE]]
    assert decoded(path, 1).tolist() == [luma(PALETTE)]


def test_cmyk_is_converted_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.tif"
    img = Image.new("CMYK", (3, 1))
    img.putdata([(0, 0, 0, 0), (0, 255, 255, 0), (0, 0, 0, 255)])  # white, red, black
    img.save(path)
    assert decoded(path, 3).tolist() == [[[255, 255, 255], [255, 0, 0], [0, 0, 0]]]
    assert decoded(path, 1).tolist() == [luma([(255, 255, 255), (255, 0, 0), (0, 0, 0)])]


def test_16_bit_rgb_png(tmp_path: Path) -> None:
    pixels = np.array([[[65535, 0, 0], [0, 32896, 0], [2570, 5140, 7710]]], dtype=np.uint16)
    path = write_png16(tmp_path / "rgb16.png", pixels, 2)
    assert decoded(path, 3).tolist() == [[[255, 0, 0], [0, 128, 0], [10, 20, 30]]]


# --- transparency: composited over black ------------------------------------------------------------------


def test_the_background_is_black() -> None:
    assert BACKGROUND == 0


def test_grey_with_alpha_is_composited_over_black(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    Image.fromarray(np.array([[[200, 255], [200, 128], [200, 0]]], dtype=np.uint8)).save(path)
    assert Image.open(path).mode == "LA"
    assert decoded(path, 1).tolist() == [[200, 100, 0]]  # 200 * alpha / 255, rounded
    assert decoded(path, 3).tolist() == [[[200] * 3, [100] * 3, [0] * 3]]


def test_rgba_is_composited_over_black(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    pixels = [[[255, 0, 0, 255], [0, 255, 0, 0], [100, 200, 50, 51]]]
    Image.fromarray(np.array(pixels, dtype=np.uint8)).save(path)
    assert Image.open(path).mode == "RGBA"
    assert decoded(path, 3).tolist() == [[[255, 0, 0], [0, 0, 0], [20, 40, 10]]]
    assert decoded(path, 1).tolist() == [luma([(255, 0, 0), (0, 0, 0), (20, 40, 10)])]


def test_palette_transparency_is_composited_over_black(tmp_path: Path) -> None:
    path = tmp_path / "palette_alpha.png"
    palette_image().save(path, transparency=bytes([255, 128, 0]))  # an alpha per palette entry
    assert decoded(path, 3).tolist() == [[[0, 0, 0], [128, 0, 0], [0, 0, 0]]]


def test_gif_transparent_index_is_black(tmp_path: Path) -> None:
    path = tmp_path / "icon.gif"
    img = Image.new("P", (2, 1))
    img.putpalette([255, 255, 255, 0, 0, 255])
    img.putdata([0, 1])
    img.save(path, transparency=0)  # the white entry is transparent
    assert decoded(path, 3).tolist() == [[[0, 0, 0], [0, 0, 255]]]


def test_rgb_colour_key_transparency_is_black(tmp_path: Path) -> None:
    path = tmp_path / "keyed.png"
    Image.fromarray(np.array([[[1, 2, 3], [90, 90, 90]]], dtype=np.uint8)).save(path, transparency=(1, 2, 3))
    assert decoded(path, 3).tolist() == [[[0, 0, 0], [90, 90, 90]]]


def test_16_bit_grey_with_alpha_png(tmp_path: Path) -> None:
    pixels = np.array([[[65535, 65535], [65535, 32896], [65535, 0]]], dtype=np.uint16)
    path = write_png16(tmp_path / "la16.png", pixels, 4)
    assert decoded(path, 1).tolist() == [[255, 128, 0]]


# --- orientation, and the path through a dataset ------------------------------------------------------------


def test_exif_orientation_turns_the_image_upright(tmp_path: Path) -> None:
    path = tmp_path / "phone.png"
    img = Image.fromarray(np.array([[10, 250]], dtype=np.uint8))  # stored 2 wide, 1 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(path, exif=exif)
    x = load_image(path, (1, 2, 1))  # shown 1 wide, 2 high: the left pixel on top
    assert x is not None and x[0, :, 0].tolist() == [10, 250]


@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_an_image_folder_of_16_bit_pngs_is_not_white(tmp_path: Path, in_memory: str) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(np.full((4, 4), 1000 * (i + 1), dtype=np.uint16)).save(folder / f"{i}.png")
    cfg = DatasetConfig(name="image_folder", path=str(folder), image_size=4, channels=1, in_memory=in_memory)
    data = create_dataset(cfg, tmp_path)
    values = sorted(
        int(split[i].max()) for split in (data.train, data.val, data.test) for i in range(len(split))
    )
    assert values == [round(1000 * (i + 1) / 257) for i in range(10)]


# --- symbolic links: no loops, every file once -----------------------------------------------------------


def flat_folder(root: Path, n: int = 12) -> Path:
    folder = root / "images"
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((4, 4), 20 * i, dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    return folder


def test_a_symlink_loop_and_duplicate_links_count_each_image_once(tmp_path: Path, caplog) -> None:
    folder = flat_folder(tmp_path)
    (folder / "loop").symlink_to(tmp_path, target_is_directory=True)  # the folder's parent: a loop
    (folder / "again").symlink_to(folder, target_is_directory=True)  # the folder itself
    (folder / "copy.png").symlink_to(folder / "img00.png")  # sorts before its target
    os.link(folder / "img01.png", folder / "z_hard.png")  # sorts after its twin
    with caplog.at_level(logging.WARNING, logger="vae"):
        images, others = find_images(folder)
    assert [p.name for p in images] == [f"img{i:02d}.png" for i in range(12)]  # the real files kept
    assert others == []
    assert "skipped 2 folder(s) and 2 file(s)" in caplog.text

    data = create_dataset(DatasetConfig(name="image_folder", path=str(folder), image_size=4), tmp_path)
    names = [n for split in (data.train, data.val, data.test) for n in split.names]
    assert len(names) == 12 and len(set(names)) == 12


def test_a_symlinked_sub_folder_is_read_once_and_labels_stay(tmp_path: Path) -> None:
    folder = tmp_path / "classes"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((4, 4), 40 * i, dtype=np.uint8)).save(folder / label / f"{i}.png")
    (folder / "c").symlink_to(folder / "a", target_is_directory=True)  # a second name for a/
    (folder / "b" / "up").symlink_to(folder, target_is_directory=True)  # a loop inside a class
    images, _ = find_images(folder)
    assert [str(p.relative_to(folder)) for p in images] == [f"{c}/{i}.png" for c in "ab" for i in range(5)]


def test_links_into_another_folder_are_still_followed(tmp_path: Path) -> None:
    elsewhere = flat_folder(tmp_path / "elsewhere", n=3)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "theirs").symlink_to(elsewhere, target_is_directory=True)
    images, _ = find_images(folder)
    assert [str(p.relative_to(folder)) for p in images] == [f"theirs/img{i:02d}.png" for i in range(3)]
