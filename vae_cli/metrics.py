"""Evaluation metrics as pure functions of tensors: no model, no files, each with its own unit test."""

from __future__ import annotations

import math

import torch

#: a latent dimension is active when Var_x(E_q[z_j|x]) exceeds this (Burda et al. 2015)
ACTIVE_THRESHOLD = 0.01


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


def active_units(mu: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> int:
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


def discretize(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Each column of (N, d) values -> integer bins 0..bins-1 of equal width between its min and max
    (disentanglement_lib's histogram discretisation). A constant column falls into one bin."""
    x = values.detach().double()
    low, high = x.min(0).values, x.max(0).values
    width = ((high - low) / bins).clamp_min(1e-12)
    return ((x - low) / width).floor().long().clamp(0, bins - 1)


def factor_codes(factors: torch.Tensor, bins: int = 20) -> torch.Tensor:
    """Ground-truth factors (N, k) -> integer classes: a factor with at most `bins` distinct values keeps
    them (one class each), a continuous one is cut into `bins` equal-width bins."""
    columns = []
    for column in factors.detach().double().T:
        distinct, index = torch.unique(column, return_inverse=True)
        columns.append(index if len(distinct) <= bins else discretize(column[:, None], bins)[:, 0])
    return torch.stack(columns, dim=1)


def discrete_mutual_information(a: torch.Tensor, b: torch.Tensor) -> float:
    """I(a; b) in nats of two integer label vectors, from their joint histogram:
    sum_ij p(i, j) log(p(i, j) / (p(i) p(j)))."""
    a, b = torch.unique(a, return_inverse=True)[1], torch.unique(b, return_inverse=True)[1]
    joint = torch.zeros(int(a.max()) + 1, int(b.max()) + 1, dtype=torch.float64)
    joint.index_put_((a, b), torch.ones(len(a), dtype=torch.float64), accumulate=True)
    joint /= len(a)
    outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    nonzero = joint > 0
    return float((joint[nonzero] * (joint[nonzero] / outer[nonzero]).log()).sum())


def entropy(labels: torch.Tensor) -> float:
    """H(v) in nats of an integer label vector."""
    p = torch.unique(labels, return_counts=True)[1].double() / len(labels)
    return float(-(p * p.log()).sum())


def mutual_information_gap(codes: torch.Tensor, factors: torch.Tensor, bins: int = 20) -> float:
    """The Mutual Information Gap (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs").

    For each ground-truth factor v_k: the mutual information I(z_j; v_k) with every code dimension z_j
    (codes (N, d), e.g. the posterior means, cut into `bins` equal-width bins per dimension; factors
    (N, K) kept as classes, see `factor_codes`), normalised by the factor's entropy H(v_k); the gap
    between the largest and the second largest is how exclusively one dimension captures that factor.
    MIG is the gap averaged over factors (those with H(v_k) > 0): 1 when every factor lives in exactly one
    dimension, 0 when none does. With a single code dimension the gap is the normalised information itself.
    """
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise ValueError(
            f"codes {tuple(codes.shape)} and factors {tuple(factors.shape)} must be (N, d), (N, K)"
        )
    z, v = discretize(codes, bins), factor_codes(factors, bins)
    gaps = []
    for k in range(v.shape[1]):
        h = entropy(v[:, k])
        if h <= 0:
            continue  # a constant factor carries no information to find
        mi = sorted((discrete_mutual_information(z[:, j], v[:, k]) for j in range(z.shape[1])), reverse=True)
        second = mi[1] if len(mi) > 1 else 0.0
        gaps.append((mi[0] - second) / h)
    return float(sum(gaps) / len(gaps)) if gaps else math.nan


def split_mig(mu: torch.Tensor, factors: torch.Tensor | None) -> float | None:
    """The MIG of codes mu against a split's ground-truth factors; None when there are none to compare."""
    if factors is None or len(factors) != len(mu) or len(mu) < 2:
        return None
    return mutual_information_gap(mu, factors)


# --- DCI (Eastwood & Williams 2018) ----------------------------------------------------------------------

#: DCI fits its classifiers on this share of the codes given and scores their accuracy on the rest
DCI_FIT_SHARE = 0.8
#: at most this many codes fitted on and scored on (disentanglement_lib's num_train and num_test)
DCI_MAX_FIT, DCI_MAX_HELD_OUT = 10_000, 5_000
#: below this many codes, the importances and the held-out accuracy are noise: no DCI
DCI_MIN_EXAMPLES = 100
#: trees per factor's random forest
DCI_TREES = 10


def _normalised_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Each row of nonnegative weights (R, C), normalised to a distribution over its C entries -> its
    entropy in units of log C, in [0, 1] (R,); 0 for C = 1 (one outcome) and for an all-zero row."""
    rows, outcomes = weights.shape
    if outcomes < 2:
        return torch.zeros(rows, dtype=torch.float64)
    p = weights / weights.sum(1, keepdim=True).clamp_min(1e-300)
    return -(p * p.clamp_min(1e-300).log()).sum(1) / math.log(outcomes)


def dci_scores(importance: torch.Tensor) -> tuple[float, float]:
    """(disentanglement, completeness) of an importance matrix R (d code dimensions, K factors), R_jk =
    how much code dimension j counts in predicting factor k (Eastwood & Williams 2018, "A Framework for
    the Quantitative Evaluation of Disentangled Representations"; disentanglement_lib's dci.py):

        disentanglement = sum_j rho_j (1 - H_K(P_j.)),  P_jk = R_jk / sum_k R_jk,  rho_j = sum_k R_jk / sum R
        completeness    = sum_k rho_k (1 - H_d(P_.k)),  P_jk = R_jk / sum_j R_jk,  rho_k = sum_j R_jk / sum R

    H_K the entropy in units of log K. Each is 1 when every code dimension serves one factor (and every
    factor one dimension), 0 when each serves all equally; an all-zero R counts as uniform (0, 0)."""
    r = importance.detach().double().abs()
    if r.ndim != 2 or r.numel() == 0:
        raise ValueError(f"the importance matrix {tuple(r.shape)} must be (code dimensions, factors)")
    if r.sum() <= 0:
        r = torch.ones_like(r)
    total = r.sum()
    disentanglement = ((1 - _normalised_entropy(r)) * r.sum(1) / total).sum()
    completeness = ((1 - _normalised_entropy(r.T)) * r.sum(0) / total).sum()
    return float(disentanglement), float(completeness)


def importance_matrix(
    codes: torch.Tensor, classes: torch.Tensor, fit: torch.Tensor, held_out: torch.Tensor, seed: int = 0
) -> tuple[torch.Tensor, list[float]]:
    """For each factor k (a column of integer `classes` (N, K)), a random forest (scikit-learn's
    RandomForestClassifier, DCI_TREES trees grown in full on bootstrap samples, every code dimension a
    candidate at each split) predicting it from `codes` (N, d), fitted on the rows `fit`: its impurity
    importances, a column of R (d, K) that sums to 1, and its accuracy on the rows `held_out`."""
    import warnings

    from sklearn.ensemble import RandomForestClassifier

    z, v = codes.detach().double().cpu().numpy(), classes.cpu().numpy()
    fit_rows, held_rows = fit.cpu().numpy(), held_out.cpu().numpy()
    columns, accuracies = [], []
    for k in range(v.shape[1]):
        forest = RandomForestClassifier(DCI_TREES, max_features=None, random_state=seed)
        with warnings.catch_warnings():  # "more classes than half the samples": a factor with many values
            warnings.simplefilter("ignore", UserWarning)
            forest.fit(z[fit_rows], v[fit_rows, k])
        columns.append(torch.from_numpy(forest.feature_importances_.astype("float64")))
        accuracies.append(float(forest.score(z[held_rows], v[held_rows, k])))
    return torch.stack(columns, dim=1), accuracies


def dci(codes: torch.Tensor, factors: torch.Tensor, bins: int = 20, seed: int = 0) -> dict[str, float]:
    """DCI disentanglement, completeness and informativeness (Eastwood & Williams 2018) of codes (N, d),
    e.g. the posterior means, against ground-truth factors (N, K), kept as classes like the MIG's
    (`factor_codes`; factors with one value are left out).

    The importance matrix comes from a random forest per factor (`importance_matrix`), as in Eastwood &
    Williams' own code; disentanglement_lib fits scikit-learn's gradient-boosted trees instead, whose
    one tree per class per stage takes about 40 s on a CPU for synthetic's 1,000 test codes (against
    about 0.4 s here). The forests are fitted on a seeded DCI_FIT_SHARE of the rows (at most
    DCI_MAX_FIT) and informativeness is their mean accuracy on the others (at most DCI_MAX_HELD_OUT),
    as disentanglement_lib reports it (Eastwood & Williams give the prediction error, 1 - accuracy)."""
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise ValueError(
            f"codes {tuple(codes.shape)} and factors {tuple(factors.shape)} must be (N, d), (N, K)"
        )
    if len(codes) < 2:
        raise ValueError(f"DCI needs codes to fit on and codes to score: {len(codes)} given")
    classes = factor_codes(factors, bins)
    varying = [k for k in range(classes.shape[1]) if len(classes[:, k].unique()) > 1]
    if not varying or not torch.isfinite(codes).all():  # nothing to find, or codes no forest can split
        return dict.fromkeys(("disentanglement", "completeness", "informativeness"), math.nan)
    order = torch.randperm(len(codes), generator=torch.Generator().manual_seed(seed))
    n_fit = min(max(1, round(DCI_FIT_SHARE * len(codes))), len(codes) - 1, DCI_MAX_FIT)
    fit, held_out = order[:n_fit], order[n_fit : n_fit + DCI_MAX_HELD_OUT]
    importance, accuracies = importance_matrix(codes, classes[:, varying], fit, held_out, seed)
    disentanglement, completeness = dci_scores(importance)
    return {
        "disentanglement": disentanglement,
        "completeness": completeness,
        "informativeness": sum(accuracies) / len(accuracies),
    }


def split_dci(mu: torch.Tensor, factors: torch.Tensor | None) -> dict[str, float] | None:
    """DCI of codes mu against a split's ground-truth factors, as `dci_<name>` keys; None without factors
    or with fewer than DCI_MIN_EXAMPLES codes (too few to fit the forests on and score them)."""
    if factors is None or len(factors) != len(mu) or len(mu) < DCI_MIN_EXAMPLES:
        return None
    return {f"dci_{name}": value for name, value in dci(mu, factors).items()}


def representation_metrics(mu: torch.Tensor, factors: torch.Tensor | None) -> dict[str, int | float]:
    """What the codes mu (N, latent_dim) say about the data: active units and, on data with ground-truth
    factors, the MIG and DCI (`split_dci`: dci_disentanglement, dci_completeness, dci_informativeness)."""
    result: dict[str, int | float] = {"active_units": active_units(mu)}
    if (mig := split_mig(mu, factors)) is not None:
        result["mig"] = mig
    result.update(split_dci(mu, factors) or {})
    return result


def _ranking_inputs(scores: torch.Tensor, positive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scores, positive = scores.detach().double().flatten().cpu(), positive.detach().bool().flatten().cpu()
    if scores.shape != positive.shape:
        raise ValueError(f"{len(scores)} scores but {len(positive)} labels")
    return scores, positive


def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve (scikit-learn's `roc_auc_score`): the probability that a random positive
    scores above a random negative, ties counting one half. NaN without both kinds."""
    from sklearn.metrics import roc_auc_score

    scores, positive = _ranking_inputs(scores, positive)
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == len(positive):
        return math.nan
    return float(roc_auc_score(positive.numpy(), scores.numpy()))


def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Average precision (scikit-learn's `average_precision_score`): AP = sum_t (R_t - R_(t-1)) P_t, one
    threshold per distinct score, highest first, so tied scores enter together (no interpolation).
    NaN without positives."""
    from sklearn.metrics import average_precision_score

    scores, positive = _ranking_inputs(scores, positive)
    if not positive.any():
        return math.nan
    return float(average_precision_score(positive.numpy(), scores.numpy()))
