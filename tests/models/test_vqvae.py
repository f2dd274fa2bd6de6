"""model=vqvae (vae_cli/models/vqvae.py, its code prior vae_cli/models/code_prior.py, its second stage
vae_cli/training/code_prior_stage.py): nearest-code quantisation against brute force, the straight-through
gradient, the moving-average codebook against a hand computation, the codebook loss, dead-code restarts,
the code prior's causality and uniform start, the bound's arithmetic (code_bound_split), one tiny run of
both stages through the compose API in this process (an exact resume of stage two, then evaluate, sample,
reconstruct and load_model on it), and the one-line refusals.

The registry-wide schema test (tests/config/test_schemas.py) builds it on every dataset and likelihood."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers.cli import one_error, vae
from tests.helpers.data import TINY_SYNTHETIC
from vae_cli.checkpoint import load_checkpoint
from vae_cli.config import OPTIONS, validate_train_config
from vae_cli.config.compose import compose_config
from vae_cli.data import ImageSplit
from vae_cli.errors import ConfigError, Interrupted
from vae_cli.estimators import estimate_split
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import create_model
from vae_cli.models.code_prior import CodePrior
from vae_cli.models.vqvae import VQVAE, VectorQuantizer, ema_update, nearest_codes, perplexity
from vae_cli.objectives import OBJECTIVES
from vae_cli.training import code_prior_stage

TINY = {"channels": [4, 8], "codebook_size": 6, "code_dim": 3, "prior_width": 8, "prior_heads": 2}


def tiny_model(**keys) -> VQVAE:
    torch.manual_seed(0)
    cfg = OmegaConf.structured(OPTIONS["model"]["vqvae"](**{**TINY, **keys}))
    bernoulli = create_likelihood(OmegaConf.structured(OPTIONS["loss"]["bernoulli"]))
    return create_model(cfg, (1, 8, 8), 3, bernoulli)


def test_quantisation_picks_the_nearest_code() -> None:
    g = torch.Generator().manual_seed(0)
    codebook, flat = torch.randn(7, 3, generator=g), torch.randn(50, 3, generator=g)
    torch.testing.assert_close(
        nearest_codes(flat, codebook), torch.cdist(flat, codebook).argmin(1), rtol=0, atol=0
    )
    quantizer = VectorQuantizer(7, 3, 0.25, "ema", 0.99, 0).eval()
    quantizer.codebook.copy_(codebook)
    z_e = flat.view(2, 5, 5, 3).permute(0, 3, 1, 2)  # two 5x5 grids of 3-vectors
    z_q, indices, vq_loss, commitment, counts, _ = quantizer(z_e)
    assert indices.shape == (2, 25) and int(counts.sum()) == 50
    torch.testing.assert_close(z_q.permute(0, 2, 3, 1).reshape(50, 3), codebook[indices.flatten()])
    squared = (flat - codebook[indices.flatten()]).pow(2).sum(1).view(2, 25).sum(1)
    torch.testing.assert_close(commitment, squared)
    torch.testing.assert_close(vq_loss, 0.25 * squared)  # ema: the commitment term alone


def test_the_straight_through_gradient_reaches_the_encoder() -> None:
    quantizer = VectorQuantizer(5, 2, 0.25, "ema", 0.99, 0).eval()
    z_e = torch.randn(1, 2, 3, 3, requires_grad=True)
    weights = torch.randn(1, 2, 3, 3)
    (quantizer(z_e)[0] * weights).sum().backward()
    torch.testing.assert_close(z_e.grad, weights)  # d z_q / d z_e = I: the decoder's gradient as is

    model = tiny_model()
    x = torch.rand(4, 1, 8, 8).round()
    terms = OBJECTIVES.get("vq")(model, x, None, 1.0)
    terms.loss(1.0).backward()
    first_conv = model.encoder[0].weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.code_prior.parameters())  # stage two trains it, not this loss
    torch.testing.assert_close(terms.kl, torch.full((4,), 4 * math.log(6)))  # 2x2 grid, K = 6: L log K


def test_ema_updates_move_codes_toward_their_encodings_as_computed_by_hand() -> None:
    decay = 0.9
    quantizer = VectorQuantizer(3, 2, 0.25, "ema", decay, 0)
    codebook = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    quantizer.codebook.copy_(codebook)
    quantizer.ema_total.copy_(codebook)
    encodings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [4.0, 4.0], [0.5, 0.5]])  # three near e_0, one e_1
    quantizer.train()(encodings.view(1, 2, 2, 2).permute(0, 3, 1, 2))
    # N = 0.9 * 1 + 0.1 * n, m = 0.9 * e + 0.1 * sums, e = m / N (Laplace smoothing: a 1e-5 shift)
    n = torch.tensor([3.0, 1.0, 0.0])
    count = decay * 1 + (1 - decay) * n
    total = decay * codebook + (1 - decay) * torch.stack(
        [encodings[[0, 1, 3]].sum(0), encodings[2], torch.zeros(2)]
    )
    torch.testing.assert_close(quantizer.ema_count, count)
    torch.testing.assert_close(quantizer.ema_total, total)
    torch.testing.assert_close(quantizer.codebook, total / count[:, None], atol=1e-4, rtol=1e-4)
    for j, members in ((0, [0, 1, 3]), (1, [2])):
        mean = encodings[members].mean(0)
        assert (quantizer.codebook[j] - mean).norm() < (codebook[j] - mean).norm()
    torch.testing.assert_close(quantizer.codebook[2], codebook[2], atol=1e-4, rtol=1e-4)  # unused: kept
    # the smoothing itself: N~_j = (N_j + eps) / (sum N + K eps) * sum N
    _, _, e = ema_update(torch.ones(3), codebook.clone(), n, torch.zeros(3, 2), decay, eps=0.5)
    smoothed = (count + 0.5) / (count.sum() + 1.5) * count.sum()
    torch.testing.assert_close(e, decay * codebook / smoothed[:, None])


def test_the_codebook_loss_pulls_codes_toward_their_encodings() -> None:
    quantizer = VectorQuantizer(2, 2, 0.25, "loss", 0.99, 0).train()
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [3.0, 3.0]]))
    z_e = torch.tensor([[1.0, 1.0], [2.5, 3.0]]).view(1, 1, 2, 2).permute(0, 3, 1, 2)
    _, _, vq_loss, commitment, _, _ = quantizer(z_e)
    torch.testing.assert_close(vq_loss, 1.25 * commitment)  # the codebook loss has the same value
    vq_loss.sum().backward()
    expected = 2 * (torch.tensor([[0.0, 0.0], [3.0, 3.0]]) - torch.tensor([[1.0, 1.0], [2.5, 3.0]]))
    torch.testing.assert_close(quantizer.codebook.grad, expected)  # d/de ||sg(z_e) - e||^2


def test_dead_codes_restart_from_the_batch_encodings() -> None:
    quantizer = VectorQuantizer(3, 2, 0.25, "ema", 0.99, restart_after=2).train()
    quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]]))
    quantizer.ema_total.copy_(quantizer.codebook)
    z_e = torch.tensor([[0.1, 0.0], [0.9, 1.0], [0.0, 0.2], [1.1, 0.9]]).view(1, 2, 2, 2).permute(0, 3, 1, 2)
    assert float(quantizer(z_e)[-1]) == 0 and quantizer.idle.tolist() == [0, 0, 1]
    torch.manual_seed(0)
    restarted = quantizer(z_e)[-1]  # the second step without e_2: it is dead, reset to an encoding
    assert float(restarted) == 1 and quantizer.idle.tolist() == [0, 0, 0]
    flat = z_e.permute(0, 2, 3, 1).reshape(4, 2)
    assert (flat == quantizer.codebook[2]).all(1).any()
    assert quantizer.ema_count[2] == 1 and torch.equal(quantizer.ema_total[2], quantizer.codebook[2])
    quantizer.eval()(z_e)  # evaluation neither updates nor restarts
    assert quantizer.idle.tolist() == [0, 0, 0]


def test_perplexity_counts_the_codes_in_effective_use() -> None:
    assert float(perplexity(torch.tensor([5.0, 5.0, 5.0, 5.0]))) == pytest.approx(4)
    assert float(perplexity(torch.tensor([9.0, 0.0, 0.0]))) == pytest.approx(1)


def test_the_code_prior_is_causal_and_starts_uniform() -> None:
    torch.manual_seed(0)
    prior = CodePrior(codes=5, positions=6, width=8, layers=2, heads=2)
    z = torch.randint(5, (3, 6))
    torch.testing.assert_close(prior.log_prob(z), torch.full((3,), -6 * math.log(5)))  # zero head
    assert prior.is_uniform() and prior.uniform_nll() == pytest.approx(6 * math.log(5))
    torch.nn.init.normal_(prior.head.weight)  # a prior that depends on the codes
    logits = prior.logits(z)
    for j in range(6):
        changed = z.clone()
        changed[:, j] = (changed[:, j] + 1) % 5
        other = prior.logits(changed)
        torch.testing.assert_close(other[:, : j + 1], logits[:, : j + 1])  # positions <= j read z_<j only
        if j < 5:
            assert not torch.allclose(other[:, j + 1 :], logits[:, j + 1 :])
    torch.testing.assert_close(prior.log_prob(z), prior.log_prob_per_position(z).sum(1))
    torch.testing.assert_close(
        prior.log_prob_per_position(z), logits.log_softmax(-1).gather(2, z[..., None])[..., 0]
    )
    draws = [prior.sample(4, torch.Generator().manual_seed(1), 0.5) for _ in range(2)]
    assert torch.equal(*draws) and draws[0].shape == (4, 6) and int(draws[0].max()) < 5
    cold = prior.sample(200, torch.Generator().manual_seed(2), 0.05)  # temperature -> 0: the mode
    first = prior.next_logits(torch.empty(1, 0, dtype=torch.long))[0, 0].argmax()
    assert (cold[:, 0] == first).float().mean() > 0.95


def test_the_bound_is_the_reconstruction_plus_the_code_prior() -> None:
    model = tiny_model().eval()
    torch.nn.init.normal_(model.code_prior.head.weight)
    images = (torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    result = estimate_split(
        model, ImageSplit(images), binarize="none", k=7, seed=0, batch_size=4, recon_error=True
    )
    x = images.float() / 255
    with torch.no_grad():
        indices = model.indices(x)
        recon = model.likelihood.nll(model.decode(model.lookup(indices)), x)
        log_prior = model.code_prior.log_prob(indices)
    assert torch.equal(result["indices"], indices)
    torch.testing.assert_close(result["recon"], recon.double())
    torch.testing.assert_close(
        result["kl"], -log_prior.double()
    )  # KL(q || p) = -log p(z_q): q is a point mass
    torch.testing.assert_close(result["neg_elbo"], result["recon"] + result["kl"])
    assert torch.equal(result["iwae_nll"], result["neg_elbo"])  # every draw is z_q: IWAE_k = ELBO
    torch.testing.assert_close(result["kl_per_dim"].sum(1), result["kl"])
    assert result["mu"].shape == (10, model.latent_dim) == (10, 3 * 2 * 2)
    torch.testing.assert_close(model.code(x), result["mu"])


# --- both stages, in this process ------------------------------------------------------------------------

OPTIONS_ = [
    *(
        o
        for o in TINY_SYNTHETIC
        if o not in ("model=conv", "latent_dim=4") and not o.startswith("dataset.size")
    ),
    "dataset.size=160",
    "model=vqvae",
    "model.channels=[4,8]",
    "model.codebook_size=8",
    "model.code_dim=3",
    "model.prior_width=8",
    "model.prior_heads=2",
    "model.prior_layers=1",
    "model.restart_after=1",
    "train.epochs=1",
    "train.image_every=1",
    "train.log_every=2",
]


def test_both_stages_train_resume_exactly_sample_evaluate_and_reconstruct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stage two interrupted in its second epoch (with model.prior_epochs=3) and resumed with
    model.prior_epochs=2 ends where a straight run of two epochs does; then every command on it."""
    from vae_cli import load_model
    from vae_cli.commands.evaluate import evaluate
    from vae_cli.commands.reconstruct import reconstruct
    from vae_cli.commands.sample import sample
    from vae_cli.commands.score import score
    from vae_cli.training.loop import train

    composed = compose_config([*OPTIONS_, f"data_dir={tmp_path}"])  # once: each run takes a copy

    def run(name: str, prior_epochs: int, resume: Path | None = None) -> dict:
        cfg = copy.deepcopy(composed)
        cfg.model.prior_epochs, cfg.train.resume = prior_epochs, str(resume) if resume else None
        return train(cfg, tmp_path / name)

    straight = run("straight", 2)
    prior_epoch = code_prior_stage.prior_epoch

    def stopped_in_the_second(run, prior, optimizer, grids, epoch, counters, tb):
        if epoch == 1:
            run.stop.requested = "SIGTERM"  # as GracefulStop's handler says it: stop after this step
        return prior_epoch(run, prior, optimizer, grids, epoch, counters, tb)

    monkeypatch.setattr(code_prior_stage, "prior_epoch", stopped_in_the_second)
    with pytest.raises(
        Interrupted, match=r"stopped the code prior \(stage two\) in its epoch 2; .* train.resume="
    ):
        run("first", 3)
    monkeypatch.undo()
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert (load_checkpoint(last)["stage"], load_checkpoint(last)["code_prior"]["epoch"]) == (2, 1)
    resumed = run("resumed", 2, last)  # model.prior_epochs, a training-only key, changed
    for name in ("last", "best"):
        a = load_checkpoint(tmp_path / "straight" / "checkpoints" / f"{name}.ckpt")["model"]
        b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / f"{name}.ckpt")["model"]
        assert any(k.startswith("code_prior.") for k in a) and all(torch.equal(a[k], b[k]) for k in a)
    assert straight["automatic"]["objective"] == "vq" and straight["automatic"]["latent_dim"] == 3
    assert {"codebook_usage", "perplexity", "commitment"} <= set(straight["val"])
    p = straight["code_prior"]
    assert p["test_nll"] == resumed["code_prior"]["test_nll"] and p["test_nll"] < p["uniform_nll"]
    assert p["test_neg_elbo"] == pytest.approx(straight["test"]["recon"] + p["test_nll"])
    assert (straight["test"]["kl"], straight["test"]["neg_elbo"]) == (p["test_nll"], p["test_neg_elbo"])
    assert p["test_bits_per_code"] == pytest.approx(p["test_nll"] / (p["codes_per_example"] * math.log(2)))
    assert json.loads((tmp_path / "straight" / "metrics.json").read_text())["code_prior"] == p

    folder = tmp_path / "straight"
    m = evaluate(compose_config([f"ckpt={folder}", "probe=false", "pca=false"], "evaluate"), tmp_path / "e")
    assert m["kl"] == pytest.approx(p["test_nll"]) and m["recon"] == pytest.approx(straight["test"]["recon"])
    assert m["neg_elbo"] == pytest.approx(m["recon"] + m["kl"]) and m["iwae_nll"] == m["neg_elbo"]
    assert m["elbo_bits_per_dim"] == pytest.approx(m["neg_elbo"] / (16 * 16 * math.log(2)))
    assert m["prior_bits_per_code"] == pytest.approx(p["test_bits_per_code"])
    assert m["iwae_bound"] == "deterministic" and "q(z_q|x) = 1" in m["bound"]
    assert (
        "neg_elbo" in m["comparable"]
        and 0 < m["codebook_usage"] <= 1
        and m["code_prior"] == "fitted in stage two"
    )
    assert len(m["kl_per_dim"]) == p["codes_per_example"] == 16

    cfg = compose_config([f"ckpt={folder}", "n=6", "temperature=0.8"], "sample")
    sample(cfg, tmp_path / "s")
    assert (tmp_path / "s" / "samples.png").is_file()
    cfg.mode = "interpolate"
    sample(cfg, tmp_path / "i")
    for mode in ("traverse", "manifold"):
        cfg.mode = mode
        with pytest.raises(ConfigError, match=f"^mode={mode} sweeps continuous latent dimensions"):
            sample(cfg, tmp_path / mode)
    reconstruct(compose_config([f"ckpt={folder}", "n=4"], "reconstruct"), tmp_path / "r")
    assert (tmp_path / "r" / "reconstructions.png").is_file()
    scored = score(compose_config([f"ckpt={folder}", "input=test"], "score"), tmp_path / "sc")
    assert scored["mean_score"] == pytest.approx(m["neg_elbo"])  # score=neg_elbo: the same bound

    model = load_model(folder, "cpu")
    assert isinstance(model, VQVAE) and not model.code_prior.is_uniform()
    generator = torch.Generator().manual_seed(0)
    assert model.sample(3, generator=generator).shape == (3, 1, 16, 16)
    assert model.prior_codes(2, generator=generator).shape == (2, model.latent_dim)


# --- one line for what cannot work -----------------------------------------------------------------------


#: (keys set on model=vqvae's config, the one line that refuses them)
IMPOSSIBLE = [
    ({"model.codebook_size": 1}, "model.codebook_size=1 is invalid: must be at least 2"),
    ({"model.prior_epochs": -1}, "model.prior_epochs=-1 is invalid: must be >= 0"),
    ({"model.ema_decay": 1.0}, "model.ema_decay=1.0 is invalid: must be in (0, 1)"),
    (
        {"model.prior_width": 10, "model.prior_heads": 4},
        "model.prior_width=10 is invalid: must be a multiple",
    ),
    ({"latent_dim": 8}, "latent_dim=8 does not apply to model=vqvae"),
    ({"beta": 2.0}, "beta=2.0 weighs a KL, and model=vqvae's is constant"),
    ({"train.ema": 0.9}, "train.ema=0.9 averages the weights"),
    ({"train.background": True}, "train.background=true trains a second model"),
]


def test_impossible_values_stop_with_one_line() -> None:
    base = compose_config(["model=vqvae"])
    validate_train_config(base)
    for keys, message in IMPOSSIBLE:
        cfg = copy.deepcopy(base)
        for key, value in keys.items():
            OmegaConf.update(cfg, key, value)
        with pytest.raises(ConfigError, match="^" + re.escape(message)):
            validate_train_config(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("model=vqvae objective=iwae", "objective=iwae does not train model=vqvae"),
        ("model=vqvae prior=mog", "prior=mog does not apply to model=vqvae"),
        ("model=vqvae posterior=iaf", "posterior=iaf does not apply to model=vqvae"),
        ("model=conv objective=vq", "objective=vq trains model=vqvae's encoder and codebook"),
    ],
)
def test_other_groups_stop_with_one_line(overrides: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        validate_train_config(compose_config(overrides.split()))


def test_a_grid_too_small_for_the_image_stops_with_one_line(tmp_path: Path) -> None:
    result = vae(["train", *OPTIONS_, "model.channels=[4,4,4,4,4]"], tmp_path)
    message = one_error(result.returncode, result.stderr)
    assert "model.channels has 5 stride-2 layers, too many for 16x16 images" in message
