"""The conditional VAE (model.conditional=true, vae_cli/models/conditional.py): the one-hot label joins the
encoder's input (channels for images, features for vectors) and the decoder's code, for every
architecture; the label reaches the decoder; `vae sample label=<k>` and `mode=classes`; evaluate and
reconstruct read the split's labels; load_model rebuilds it from the checkpoint's classes; an exact resume;
the one-line refusals (unlabelled data, a label it was not trained on) in real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import fork_vae, one_error, only_run_dir, vae
from tests.helpers.data import TINY_SYNTHETIC
from vae_cli.checkpoint import load_checkpoint
from vae_cli.config import LossConfig, ModelConfig
from vae_cli.data.base import ImageSplit
from vae_cli.data.loaders import LabelledBatches, make_batches, split_batch
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import create_model
from vae_cli.models.conditional import Classes, ConditionalVAE, conditioned

SHAPES = Classes(4, (0, 1, 2, 3), ("square", "ellipse", "heart", "triangle"))
TINY = [*TINY_SYNTHETIC, "train.epochs=1", "train.image_every=0", "model.conditional=true"]
#: every architecture, tiny
ARCHITECTURES = {
    "mlp": {"name": "mlp", "hidden_dims": [16]},
    "conv": {"name": "conv", "channels": [4, 8]},
    "resnet": {"name": "resnet", "channels": [4, 8]},
    "ladder": {"name": "ladder", "layers": [3], "hidden_dims": [16, 8]},
    "ladder_conv": {
        "name": "ladder",
        "form": "conv",
        "layers": [3],
        "hidden_dims": [16, 8],
        "channels": [4, 8],
    },
}


def conditional_model(arch: dict, shape: tuple[int, int, int] = (1, 16, 16), classes: Classes = SHAPES):
    torch.manual_seed(0)
    likelihood = create_likelihood(LossConfig(name="bernoulli"))
    return create_model(ModelConfig(**arch, conditional=True), shape, 2, likelihood, classes=classes).eval()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_hears_the_label_in_its_decoder_and_encoder(arch: str) -> None:
    model = conditional_model(ARCHITECTURES[arch])
    assert isinstance(model, ConditionalVAE) and model.classes == SHAPES
    z = torch.randn(3, model.latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model.decode(z, labels=0), model.decode(z, labels=torch.tensor([2, 2, 2]))
        x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(2))
        mu_a, _ = model.encode(x, labels=1)
        mu_b, _ = model.encode(x, labels=3)
    assert a.shape == b.shape == (3, 1, 16, 16)
    assert not torch.allclose(a, b)  # the same z, another label: another image
    assert not torch.allclose(mu_a, mu_b)  # q(z|x, y) depends on y
    with torch.no_grad(), conditioned(model, torch.tensor([2, 2, 2])):  # the batch's labels, set once
        torch.testing.assert_close(model.decode(z), b)
        out = model(x, samples=3, densities=True)  # k draws decoded as one (k * N)-row batch
    assert out.params.shape == (9, 1, 16, 16)
    assert model.condition.onehot is None  # nothing left set


def test_the_one_hot_joins_images_as_channels_and_vectors_as_features() -> None:
    seen = {}

    def record(module, inputs):
        seen["input"] = inputs[0]

    images = conditional_model(ARCHITECTURES["conv"])
    images.encoder.net.register_forward_pre_hook(record)
    with torch.no_grad():
        images.encode(torch.rand(5, 1, 16, 16), labels=torch.tensor([0, 1, 2, 3, 3]))
    x = seen["input"]
    assert x.shape == (5, 1 + 4, 16, 16)
    assert (x[:, 1:] == torch.eye(4)[[0, 1, 2, 3, 3]][:, :, None, None]).all()  # constant one-hot maps

    vectors = conditional_model({"name": "mlp", "hidden_dims": [8]}, (1, 1, 6), Classes(3, (0, 1, 2)))
    vectors.encoder.net.register_forward_pre_hook(record)
    with torch.no_grad():
        vectors.encode(torch.rand(2, 1, 1, 6), labels=torch.tensor([2, 0]))
    assert seen["input"].shape == (2, 1, 1, 6 + 3)
    assert (seen["input"][:, 0, 0, 6:] == torch.tensor([[0.0, 0, 1], [1, 0, 0]])).all()
    decoder_in = vectors.decoder.net[0]  # the decoder reads [z, onehot(y)]
    assert decoder_in.in_features == vectors.latent_dim + 3


def test_labelled_batches_follow_the_shuffle_and_the_unconditional_batches_stay_tensors() -> None:
    split = ImageSplit(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), torch.arange(10) % 4)
    plain = make_batches(split, 3, True, 0, torch.device("cpu"))
    labelled = LabelledBatches(make_batches(split, 3, True, 0, torch.device("cpu")), split.labels)
    plain.set_epoch(1)
    labelled.set_epoch(1, start_batch=1)  # mid-epoch resume skips the batches already taken
    batches = list(labelled)
    assert len(batches) == 3 and all(isinstance(b, torch.Tensor) for b in plain)
    for images, labels in batches:
        assert (labels == images.flatten().long() % 4).all()
    assert split_batch(next(iter(plain)))[1] is None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny conditional conv model on synthetic shapes, one epoch."""
    root = tmp_path_factory.mktemp("conditional")
    result = vae(["train", *TINY], root)
    assert result.returncode == 0, result.stderr
    return only_run_dir(root)


def test_load_model_rebuilds_the_classes_from_the_checkpoint(run: Path) -> None:
    from vae_cli import load_model

    model = load_model(run, "cpu")
    assert isinstance(model, ConditionalVAE) and model.classes == SHAPES
    saved = load_checkpoint(run / "checkpoints" / "best.ckpt")
    assert saved["classes"] == SHAPES.payload()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved["model"][key])
    g = torch.Generator().manual_seed(0)
    assert model.sample(3, generator=g, labels=2).shape == (3, 1, 16, 16)
    z = model.prior_codes(2, generator=g)
    with torch.no_grad():
        assert not torch.allclose(model.decode(z, labels=0), model.decode(z, labels=3))


def test_sample_one_class_and_a_row_per_class(run: Path, tmp_path: Path) -> None:
    one = vae(
        ["sample", f"ckpt={run}", "label=heart", "n=4", "save_tensor=true", f"out={tmp_path}/a"], tmp_path
    )
    assert one.returncode == 0, one.stderr
    rows = vae(
        ["sample", f"ckpt={run}", "mode=classes", "nrow=3", "save_tensor=true", f"out={tmp_path}/b"], tmp_path
    )
    assert rows.returncode == 0, rows.stderr
    from vae_cli import load_model

    model = load_model(run, "cpu")
    heart = torch.load(tmp_path / "a" / "samples.pt")
    grid = torch.load(tmp_path / "b" / "classes.pt")
    assert heart.shape == (4, 1, 16, 16) and grid.shape == (4 * 3, 1, 16, 16)
    # sample's codes are the prior's first draws of its seeded generator: decoded as a heart, they are it
    z4, z3 = (model.prior_codes(n, generator=torch.Generator().manual_seed(0)) for n in (4, 3))
    with torch.no_grad():
        torch.testing.assert_close(heart, model.likelihood.mean(model.decode(z4, labels=2)))
        for row in range(4):  # row k: the same three codes, decoded as class k
            expected = model.likelihood.mean(model.decode(z3, labels=row))
            torch.testing.assert_close(grid[3 * row : 3 * row + 3], expected)
    assert (tmp_path / "b" / "classes.png").is_file()


def test_evaluate_and_reconstruct_use_the_true_labels(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vae_cli.commands.reconstruct as reconstruct
    from vae_cli.api import read_checkpoint
    from vae_cli.commands.common import load_data
    from vae_cli.estimators import encode_split

    trained = read_checkpoint(run, "cpu")
    test = load_data(trained, "data").test
    x = test.images.float() / 255
    codes = encode_split(trained.model, test, "none", 0)  # the estimators' pass over a labelled split
    with torch.no_grad():
        torch.testing.assert_close(codes, trained.model.code(x, labels=test.labels))
        assert not torch.allclose(codes, trained.model.code(x, labels=(test.labels + 1) % 4))
    evaluate = ["evaluate", f"ckpt={run}", "iwae_k=4", "pca=false", "probe=false", "max_examples=8"]
    result = vae([*evaluate, f"out={tmp_path}/e"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "e" / "metrics_test.json").read_text())["iwae_nll"] > 0
    given, original = [], reconstruct.reconstruct_images

    def reconstruct_images(model, x, labels=None):  # records the labels the command passes
        given.append(labels)
        return original(model, x, labels)

    monkeypatch.setattr(reconstruct, "reconstruct_images", reconstruct_images)
    result = vae(["reconstruct", f"ckpt={run}", "n=4", f"out={tmp_path}/r"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert given[0].tolist() == test.labels[:4].tolist()  # the split's own labels


def test_a_conditional_run_resumes_exactly(run: Path, tmp_path: Path) -> None:
    for name in ("straight", "resumed"):
        (tmp_path / name).mkdir()
    options = [o for o in TINY if o != "train.epochs=1"]
    assert vae(["train", *options, "train.epochs=2"], tmp_path / "straight").returncode == 0
    last = run / "checkpoints" / "last.ckpt"
    result = vae(["train", *options, "train.epochs=2", f"train.resume={last}"], tmp_path / "resumed")
    assert result.returncode == 0, result.stderr
    a = load_checkpoint(only_run_dir(tmp_path / "straight") / "checkpoints" / "last.ckpt")["model"]
    b = load_checkpoint(only_run_dir(tmp_path / "resumed") / "checkpoints" / "last.ckpt")["model"]
    assert any(".net." in k for k in a)  # the wrapped networks' weights
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_unlabelled_data_and_an_unknown_label_stop_with_one_line(run: Path, tmp_path: Path) -> None:
    table = tmp_path / "rows.csv"
    table.write_text("a,b\n" + "".join(f"{i % 3},{i % 5}\n" for i in range(40)))
    unlabelled = fork_vae(
        ["train", "dataset=tensor", f"dataset.path={table}", "model.conditional=true", "train.epochs=1"],
        tmp_path,
    )
    assert "model.conditional=true needs labelled data" in one_error(unlabelled.returncode, unlabelled.stderr)
    unknown = fork_vae(["sample", f"ckpt={run}", "label=99", f"out={tmp_path}/s"], tmp_path)
    message = one_error(unknown.returncode, unknown.stderr)
    assert "label=99 is not a class this model was trained on" in message and "heart (2)" in message
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").glob("*.png"))  # nothing written


def test_label_and_mode_classes_need_a_conditional_model_and_vamp_is_refused() -> None:
    from omegaconf import OmegaConf

    from vae_cli.commands.sample import chosen_label
    from vae_cli.config.train import validate_conditional
    from vae_cli.errors import ConfigError

    for settings in ({"label": 3, "mode": "mean"}, {"label": None, "mode": "classes"}):
        with pytest.raises(ConfigError, match="is for a conditional model"):
            chosen_label(None, OmegaConf.create(settings))
    assert chosen_label(SHAPES, OmegaConf.create({"label": "Heart", "mode": "mean"})) == 2
    with pytest.raises(ConfigError, match="prior=vamp encodes pseudo-inputs"):
        validate_conditional("conv", "vamp")
