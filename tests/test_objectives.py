"""The objectives (vae_cli/objectives.py): the ELBO's terms in nats, the importance-weighted objective,
free bits and the beta warm-up."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from vae_cli.config import LossConfig, ModelConfig
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import create_model
from vae_cli.objectives import Terms, beta_at, elbo_terms, iwae_terms


def test_elbo_terms_are_per_example_sums_in_nats() -> None:
    """recon = -log p(x|z) summed over pixels, KL summed over latents, no hidden scaling."""
    torch.manual_seed(0)
    lik = create_likelihood(LossConfig(name="bernoulli"))
    model = create_model(ModelConfig(name="mlp", hidden_dims=[16]), (1, 4, 4), 3, lik)
    x = torch.randint(0, 2, (6, 1, 4, 4)).float()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    terms = elbo_terms(model, x, generator=g1)
    out = model(x, g2)
    recon = -Bernoulli(logits=out.params).log_prob(x).flatten(1).sum(1)
    kl = kl_divergence(Normal(out.mu, (0.5 * out.logvar).exp()), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(terms.recon, recon)
    torch.testing.assert_close(terms.kl, kl)
    torch.testing.assert_close(terms.loss(beta=4.0), (recon + 4.0 * kl).mean())


def test_beta_warmup_ramps_linearly_from_zero() -> None:
    assert beta_at(0, 4.0, 100) == 0.0
    assert beta_at(50, 4.0, 100) == 2.0
    assert beta_at(100, 4.0, 100) == 4.0
    assert beta_at(1000, 4.0, 100) == 4.0
    assert beta_at(0, 4.0, 0) == 4.0


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    lik = create_likelihood(LossConfig(name="bernoulli"))
    return create_model(ModelConfig(name="mlp", hidden_dims=[16]), (1, 4, 4), 3, lik)


def test_iwae_at_k1_is_the_elbo_with_a_sampled_kl() -> None:
    model, x = tiny_model(), torch.randint(0, 2, (5, 1, 4, 4)).float()
    out = model(x, torch.Generator().manual_seed(3))
    terms = iwae_terms(model, x, k=1, generator=torch.Generator().manual_seed(3))
    log_px_z = model.likelihood.log_prob(out.params, x)
    std = torch.exp(0.5 * out.logvar)
    q = torch.distributions.Normal(out.mu, std).log_prob(out.z).sum(1)
    p = torch.distributions.Normal(0.0, 1.0).log_prob(out.z).sum(1)
    torch.testing.assert_close(terms.bound, log_px_z + p - q)
    torch.testing.assert_close(terms.loss(beta=1.0), -(log_px_z + p - q).mean())
    # ... and in expectation equals the ELBO with the closed-form KL.
    xs = x.repeat(4000, 1, 1, 1)
    iwae1 = iwae_terms(model, xs, k=1).bound.mean()
    elbo = -elbo_terms(model, xs).loss(1.0)
    assert abs(iwae1 - elbo) < 0.05


def test_iwae_tightens_with_k() -> None:
    model, x = tiny_model(1), torch.randint(0, 2, (400, 1, 4, 4)).float()
    bounds = [iwae_terms(model, x, k=k).bound.mean().item() for k in (1, 5, 50)]
    assert bounds[0] < bounds[1] < bounds[2]


def test_free_bits_floor_each_dimension_in_the_loss() -> None:
    recon = torch.tensor([10.0, 12.0])
    kl_per_dim = torch.tensor([[0.01, 2.0, 0.3], [0.03, 1.0, 0.5]])  # batch means 0.02, 1.5, 0.4
    terms = Terms(recon, kl_per_dim.sum(1), kl_per_dim)
    assert terms.loss(1.0) == pytest.approx(11.0 + 1.92)
    assert terms.loss(1.0, free_bits=0.5) == pytest.approx(11.0 + 0.5 + 1.5 + 0.5)
    assert terms.loss(2.0, free_bits=0.1) == pytest.approx(11.0 + 2 * (0.1 + 1.5 + 0.4))
    # Below the floor a dimension's KL gets no gradient: the loss never pushes it lower.
    per_dim = kl_per_dim.clone().requires_grad_(True)
    Terms(recon, per_dim.sum(1), per_dim).loss(1.0, free_bits=0.5).backward()
    assert per_dim.grad[:, 0].abs().sum() == 0 and per_dim.grad[:, 2].abs().sum() == 0
    assert per_dim.grad[:, 1].abs().sum() > 0


def test_a_trimmed_loss_leaves_out_the_batchs_worst_examples() -> None:
    recon = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0], requires_grad=True)
    kl = torch.zeros(5)
    terms = Terms(recon, kl, kl[:, None])
    trimmed = terms.loss(1.0, trim=0.2)
    assert float(trimmed.detach()) == pytest.approx(2.5)  # the outlier (100) is left out: no gradient
    trimmed.backward()
    assert recon.grad.tolist() == [0.25, 0.25, 0.25, 0.25, 0.0]
    assert float(terms.loss(1.0).detach()) == pytest.approx(22.0)  # untrimmed: the plain mean
    bound = Terms(recon.detach(), kl, kl[:, None], bound=-recon.detach())  # IWAE: ranked by -bound
    assert float(bound.loss(1.0, trim=0.4)) == pytest.approx(2.0)
