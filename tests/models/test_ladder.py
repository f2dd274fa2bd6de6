"""model=ladder: its densities against torch.distributions layer by layer, the precision-weighted
posterior against the product of Gaussians, seeded draws, both forms, every prior and posterior on
top, and the one-line refusals."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf
from torch.distributions import Normal

from vae_cli.config import OPTIONS, LadderConfig
from vae_cli.errors import ConfigError
from vae_cli.likelihoods import create_likelihood
from vae_cli.models import create_model
from vae_cli.models.ladder import FeatureNorm, precision_weighted
from vae_cli.objectives import elbo_terms, iwae_terms

SHAPE = (1, 12, 12)
TOP = 3
LAYERS = [5, 4]


def ladder(form: str = "mlp", prior: str | None = None, posterior: str | None = None, **keys):
    torch.manual_seed(0)
    cfg = OmegaConf.structured(LadderConfig(form=form, layers=LAYERS, hidden_dims=[16, 12, 8], **keys))
    small = {"vamp": {"pseudo_inputs": 4}, "mog": {"components": 3}, "iaf": {"steps": 2, "hidden": 8}}
    sections = {}
    for group, name in (("prior", prior), ("posterior", posterior)):
        if name is not None:
            sections[group] = OmegaConf.structured(OPTIONS[group][name](**small.get(name, {})))
    bernoulli = create_likelihood(OmegaConf.structured(OPTIONS["loss"]["bernoulli"]))
    if form == "conv":
        cfg.channels = [4, 8]
    return create_model(cfg, SHAPE, TOP, bernoulli, sections.get("prior"), sections.get("posterior"))


def test_precision_weighting_is_the_renormalised_product_of_the_two_gaussians() -> None:
    f64 = {"dtype": torch.float64}
    mu_a, mu_b = torch.tensor([0.3, -2.0], **f64), torch.tensor([1.5, 4.0], **f64)
    var_a, var_b = torch.tensor([0.5, 3.0], **f64), torch.tensor([2.0, 0.01], **f64)
    mu, logvar = precision_weighted(mu_a, var_a.log(), mu_b, var_b.log())
    var = 1 / (1 / var_a + 1 / var_b)
    torch.testing.assert_close(logvar.exp(), var)
    torch.testing.assert_close(mu, (mu_a / var_a + mu_b / var_b) * var)
    # the product's density is proportional to N(mu_a, var_a) N(mu_b, var_b) at every point
    t = torch.linspace(-3, 3, 7, **f64)[:, None]
    ratio = Normal(mu_a, var_a.sqrt()).log_prob(t) + Normal(mu_b, var_b.sqrt()).log_prob(t)
    ratio = ratio - Normal(mu, var.sqrt()).log_prob(t)
    torch.testing.assert_close(ratio - ratio[0], torch.zeros_like(ratio), atol=1e-9, rtol=0)


def test_the_code_holds_every_layer_bottom_first_and_the_decoder_reads_the_bottom_one() -> None:
    model = ladder()
    assert model.latent_dim == sum(LAYERS) + TOP
    x = torch.rand(6, *SHAPE).round()
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (6, sum(LAYERS) + TOP)
    z = model.posterior.mean((mu, logvar))
    changed = z.clone()
    changed[:, LAYERS[0] :] += 1.0  # only the layers above the bottom one
    torch.testing.assert_close(model.decode(z), model.decode(changed))
    assert not model.closed_form


def _layer_densities(model, x, z):
    """log q(z|x) and log p(z) rebuilt with torch.distributions, one layer at a time, top-down."""
    mu, logvar = model.encode(x)
    decoder = model.decoder
    layers, means, logvars = decoder.layers(z), decoder.layers(mu), decoder.layers(logvar)
    log_q = Normal(means[-1], (0.5 * logvars[-1]).exp()).log_prob(layers[-1]).sum(-1)
    log_p = Normal(0.0, 1.0).log_prob(layers[-1]).sum(-1)
    for i in range(len(layers) - 1):
        p_mu, p_logvar = decoder.conditional(i, layers[i + 1])
        p = Normal(p_mu, (0.5 * p_logvar).exp())
        var = 1 / ((-logvars[i]).exp() + (-p_logvar).exp())
        q = Normal((means[i] * (-logvars[i]).exp() + p_mu * (-p_logvar).exp()) * var, var.sqrt())
        log_q = log_q + q.log_prob(layers[i]).sum(-1)
        log_p = log_p + p.log_prob(layers[i]).sum(-1)
    return log_q, log_p


def test_log_q_and_log_p_of_the_draws_are_the_layers_gaussians() -> None:
    model = ladder()
    x = torch.rand(4, *SHAPE).round()
    with torch.no_grad():
        z, log_q = model.posterior.rsample(model.encode(x), 3, torch.Generator().manual_seed(1))
        assert z.shape == (3, 4, model.latent_dim) and log_q.shape == (3, 4)
        expected_q, expected_p = _layer_densities(model, x, z)
        torch.testing.assert_close(log_q, expected_q, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(model.prior.log_prob(z), expected_p, atol=1e-4, rtol=1e-5)


def test_draws_are_seeded_and_prior_samples_follow_the_top_down_conditionals() -> None:
    model = ladder()
    h = model.encode(torch.rand(4, *SHAPE).round())
    with torch.no_grad():
        a = model.posterior.rsample(h, 2, torch.Generator().manual_seed(3))[0]
        b = model.posterior.rsample(h, 2, torch.Generator().manual_seed(3))[0]
        torch.testing.assert_close(a, b)
        z = model.prior.sample(20000, torch.Generator().manual_seed(0))
        layers = model.decoder.layers(z)
        torch.testing.assert_close(layers[-1].mean(0), torch.zeros(TOP), atol=0.03, rtol=0)
        mu, logvar = model.decoder.conditional(1, layers[2])
        eps = (layers[1] - mu) * (-0.5 * logvar).exp()  # standardised by its conditional: N(0, 1)
        torch.testing.assert_close(eps.std(0), torch.ones(LAYERS[1]), atol=0.03, rtol=0)
        cold = model.prior.sample(500, torch.Generator().manual_seed(0), temperature=0.0)
        torch.testing.assert_close(cold, cold[:1].expand_as(cold))


@pytest.mark.parametrize("form", ["mlp", "conv"])
@pytest.mark.parametrize(("prior", "posterior"), [(None, None), ("vamp", "iaf"), ("mog", None)])
def test_every_form_prior_and_posterior_trains_with_both_bounds(form, prior, posterior) -> None:
    model = ladder(form, prior, posterior)
    if prior is not None:
        assert type(model.prior.top).__name__ == {"vamp": "VampPrior", "mog": "MixturePrior"}[prior]
    x = torch.rand(5, *SHAPE).round()
    elbo = elbo_terms(model, x)
    assert elbo.kl_per_dim is None and elbo.recon.shape == elbo.kl.shape == (5,)
    iwae = iwae_terms(model, x, k=4)
    loss = elbo.loss(1.0) + iwae.loss(1.0)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.sample(3).shape == (3, *SHAPE)


def test_a_copy_of_the_model_shares_its_own_networks() -> None:
    model = ladder(prior="vamp")
    twin = copy.deepcopy(model)  # as the EMA copy is made
    assert twin.prior.decoder is twin.decoder and twin.posterior.decoder is twin.decoder
    assert twin.prior.top.encoder.encoder is twin.encoder
    assert len(model.state_dict()) == len(dict(model.named_parameters())) + len(list(model.buffers()))


def test_a_ladder_of_dense_blocks_takes_vectors() -> None:
    cfg = OmegaConf.structured(LadderConfig(layers=[4], hidden_dims=[16, 8]))
    gaussian = create_likelihood(OmegaConf.structured(OPTIONS["loss"]["gaussian"]))
    model = create_model(cfg, (1, 1, 10), 2, gaussian)
    assert model.sample(2).shape == (2, 1, 1, 10)
    with pytest.raises(ConfigError, match="needs images"):
        create_model(OmegaConf.structured(LadderConfig(form="conv")), (1, 1, 10), 2, gaussian)


def test_hidden_dims_must_give_one_width_per_layer() -> None:
    cfg = OmegaConf.structured(LadderConfig(layers=[8, 4], hidden_dims=[32, 16]))
    bernoulli = create_likelihood(OmegaConf.structured(OPTIONS["loss"]["bernoulli"]))
    with pytest.raises(ConfigError, match=r"2 width\(s\) for a ladder of 3 .*hidden_dims=\[512,256,128\]"):
        create_model(cfg, SHAPE, 2, bernoulli)
    default = create_model(OmegaConf.structured(LadderConfig(layers=[8, 4])), SHAPE, 2, bernoulli)
    assert [head.in_features for head in default.encoder.heads] == [512, 256, 128]
    assert [head.out_features for head in default.encoder.heads] == [16, 8, 4]


def test_feature_norm_normalises_the_last_dimension_over_every_leading_one() -> None:
    torch.manual_seed(0)
    norm, flat = FeatureNorm(6), torch.nn.BatchNorm1d(6)
    x = torch.randn(4, 5, 6) * 3 + 1  # k=4 draws of N=5 codes
    torch.testing.assert_close(norm(x), flat(x.reshape(20, 6)).view(4, 5, 6))
    torch.testing.assert_close(norm.running_mean, flat.running_mean)
    before = norm.running_mean.clone()
    row = torch.randn(1, 6)
    one = norm(row)  # a batch of one row has no variance: the running statistics serve, unchanged
    expected = (row - before) / torch.sqrt(norm.running_var + norm.eps) * norm.weight + norm.bias
    torch.testing.assert_close(one, expected)
    assert torch.equal(norm.running_mean, before)


def test_a_ladder_with_batchnorm_trains_and_evaluates_from_its_running_statistics() -> None:
    model = ladder(batchnorm=True)
    # two dense layers in each of: the 3 bottom-up blocks, the decoder and the 2 top-down networks
    assert sum(isinstance(m, FeatureNorm) for m in model.modules()) == 2 * (3 + 1 + 2)
    x = torch.rand(5, *SHAPE).round()
    iwae_terms(model, x, k=4).loss(1.0).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()  # in evaluation an image's Gaussians do not depend on the rest of its batch
    torch.testing.assert_close(model.encoder(x[:1]), model.encoder(x)[:1])
    z = torch.randn(5, sum(LAYERS) + TOP)
    torch.testing.assert_close(model.decoder(z[:1]), model.decoder(z)[:1])
    torch.testing.assert_close(model.prior.log_prob(z[:1]), model.prior.log_prob(z)[:1])
    assert model.sample(3).shape == (3, *SHAPE)
