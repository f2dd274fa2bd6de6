"""Evaluation metrics as pure functions of tensors: no model, no files, each with its own unit test."""

from __future__ import annotations

import math

import torch


def bits_per_dim(nll_nats: float, num_dims: int) -> float:
    """Nats per example -> bits per data dimension: nll / (D ln 2)."""
    return nll_nats / (num_dims * math.log(2))


def latent_variances(mu: torch.Tensor) -> torch.Tensor:
    """Variance over examples of E_q[z|x] = mu(x), per latent dimension: (N, d) -> (d,)."""
    return (
        mu.double().var(dim=0, unbiased=False)
        if len(mu) > 1
        else torch.zeros(mu.shape[1], dtype=torch.float64)
    )


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean moves with x: Var_x(E_q[z_j|x]) > threshold
    (Burda et al. 2015, section 5.2)."""
    return int((latent_variances(mu) > threshold).sum())


def logistic_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    l2: float = 1e-3,
    max_iter: int = 200,
) -> float:
    """Accuracy on the test set of a multinomial logistic regression fitted on the train set.

    Features are standardised with the train set's mean and standard deviation; the weights are fitted
    full batch with L-BFGS on the mean cross-entropy plus `l2` * ||W||^2 (the bias is not penalised)."""
    xs = train_features.detach().double().clone()  # a plain tensor, even from inference mode
    mean, std = xs.mean(0), xs.std(0, unbiased=False).clamp_min(1e-8)
    xs = (xs - mean) / std
    xt = (test_features.detach().double().clone() - mean) / std
    labels = train_labels.detach().long().clone()
    num_classes = int(max(int(labels.max()), int(test_labels.max())) + 1)
    weight = torch.zeros(xs.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ weight + bias, labels) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        predictions = (xt @ weight + bias).argmax(1)
    return float((predictions == test_labels.long()).double().mean())
