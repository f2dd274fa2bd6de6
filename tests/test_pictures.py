"""vae_cli/pictures.py: grids upscaled to a readable size, and labelled ones (issue 14, items 3 and 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.utils import make_grid

from vae_cli.pictures import (
    MAX_SIDE,
    MIN_CELL,
    cell_scale,
    grid_picture,
    labelled_picture,
    save_picture,
    shown_and_input,
    stack_pictures,
)


@pytest.mark.parametrize(("size", "expected"), [(16, 4), (28, 3), (32, 2), (64, 1), (100, 1), (1, MIN_CELL)])
def test_the_default_scale_makes_cells_at_least_64_pixels(size: int, expected: int) -> None:
    scale = cell_scale(None, size, size)
    assert scale == expected and size * scale >= MIN_CELL
    assert size * (scale - 1) < MIN_CELL  # the smallest such factor
    assert cell_scale(1, size, size) == 1 and cell_scale(3, size, size) == 3  # as asked


def test_the_default_scale_keeps_a_huge_grid_within_bounds() -> None:
    # 10,000 samples of 28x28 in rows of 100: scale 3 would make 8,400+ pixels a side
    scale = cell_scale(None, 28, 28, rows=100, cols=100)
    assert 1 <= scale < 3 and 100 * (28 + 2) * scale <= MAX_SIDE


def test_a_grid_is_torchvisions_grid_with_every_pixel_a_scale_x_scale_square() -> None:
    images = torch.rand(6, 1, 5, 7, generator=torch.Generator().manual_seed(0))
    reference = make_grid(images, nrow=3, padding=2, pad_value=0.5)[0].mul(255).round().byte().numpy()
    for scale in (1, 4):
        picture = np.asarray(grid_picture(images, 3, scale))
        assert picture.shape == (reference.shape[0] * scale, reference.shape[1] * scale)
        np.testing.assert_array_equal(picture[::scale, ::scale], reference)  # nearest neighbour: exact
        np.testing.assert_array_equal(picture[scale - 1 :: scale, scale - 1 :: scale], reference)


def test_an_rgb_grid_stays_rgb_and_the_default_scale_applies() -> None:
    picture = grid_picture(torch.rand(4, 3, 16, 16), 2)
    assert picture.mode == "RGB" and picture.size == (4 * (2 * 18 + 2), 4 * (2 * 18 + 2))


def _dark(picture: Image.Image, box: tuple[int, int, int, int]) -> int:
    """Pixels darker than mid-grey in a region of a white-margined picture: its text."""
    return int((np.asarray(picture.convert("L").crop(box)) < 128).sum())


def test_a_labelled_grid_puts_the_words_in_white_margins_around_upscaled_cells() -> None:
    images = torch.ones(6, 1, 8, 8)  # white cells: any dark pixel is text
    plain = labelled_picture(images, 3, 8)
    assert _dark(plain, (0, 0, plain.width, plain.height)) == 0
    labelled = labelled_picture(
        images,
        3,
        8,
        title=["a title line"],
        row_labels=["z0  KL 1.50", "z3  KL 0.20"],
        col_labels=["-3", "0", "3"],
        captions=["#1 812.3", "#2 700.1", "#3 650.0", None, None, None],
    )
    assert labelled.width > plain.width and labelled.height > plain.height  # margins for the words
    assert _dark(labelled, (0, 0, labelled.width, 14)) > 0  # the title, at the top
    left = labelled.width - 3 * (64 + 2)
    assert _dark(labelled, (0, 30, left - 4, labelled.height)) > 0  # the row labels, on the left
    # each cell is an exact 64x64 white square (8 px x scale 8)
    cells = np.asarray(labelled) == 255
    assert cells.sum() >= 6 * 64 * 64


def test_pictures_stack_and_save_as_png(tmp_path) -> None:
    a, b = grid_picture(torch.zeros(2, 1, 4, 4), 2, 1), grid_picture(torch.rand(3, 3, 4, 4), 3, 2)
    both = stack_pictures([a, b])
    assert both.mode == "RGB" and both.width == max(a.width, b.width) and both.height > a.height + b.height
    save_picture(both, tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as img:
        assert img.size == both.size
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary left


def test_shown_originals_are_the_real_grey_images_and_the_model_input_is_binarised() -> None:
    images = torch.full((4, 1, 6, 6), 128, dtype=torch.uint8)
    shown, x = shown_and_input(images, "dynamic", torch.Generator().manual_seed(0))
    assert torch.allclose(shown, torch.full_like(shown, 128 / 255))  # grey, as it is
    assert set(x.unique().tolist()) == {0.0, 1.0}  # what the model takes: a Bernoulli draw
    shown, x = shown_and_input(images, "none")
    assert torch.equal(shown, x)


def test_the_scale_key_takes_1_to_64_or_null() -> None:
    from vae_cli.cli import compose_config
    from vae_cli.config import validate_reconstruct_config, validate_sample_config, validate_score_config
    from vae_cli.errors import ConfigError

    for command, validate in (
        ("sample", validate_sample_config),
        ("reconstruct", validate_reconstruct_config),
        ("score", validate_score_config),
    ):
        assert compose_config(["ckpt=x"], command).scale is None  # the default: at least 64 px cells
        for ok in (1, 64):
            validate(compose_config(["ckpt=x", f"scale={ok}"], command))
        for bad in (0, 65):
            with pytest.raises(ConfigError, match=rf"scale={bad} is invalid: must be in \[1, 64\]"):
                validate(compose_config(["ckpt=x", f"scale={bad}"], command))
