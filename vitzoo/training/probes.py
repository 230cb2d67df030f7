"""Classifiers fitted on frozen embeddings: a multinomial logistic regression and the k-NN of
the DINO evaluation protocol. Plain torch, float64, full batch: at a few thousand images and a
few hundred feature dimensions each fit takes well under a second on a CPU.

* :func:`logistic_regression` minimises ``mean cross-entropy + (l2 / 2) ||W||^2`` (the bias is
  not penalised) with L-BFGS and a strong-Wolfe line search -- the objective of scikit-learn's
  ``LogisticRegression(C=1 / (l2 * N))``, which the tests use as the oracle.
* :func:`fit_linear_probe` picks ``l2`` from a grid by validation accuracy (ties: lower
  validation loss, then stronger regularisation), as linear evaluations of self-supervised ViTs
  do (DINO, DINOv2: the head's hyper-parameters chosen on held-out data).
* :func:`knn_probabilities`: cosine similarity to the ``k`` nearest training embeddings, each
  voting ``exp(similarity / T)`` for its class (Wu et al. 2018; Caron et al., DINO, ICCV 2021:
  ``k = 20``, ``T = 0.07``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

#: Regularisation strengths tried by default (10^-6 .. 10^1).
L2_GRID: tuple[float, ...] = tuple(10.0**e for e in range(-6, 2))


@dataclass(frozen=True)
class LinearClassifier:
    """``logits = features @ weight.T + bias`` (float32 for installing as a model head)."""

    weight: torch.Tensor
    bias: torch.Tensor
    l2: float

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features.double() @ self.weight.double().T + self.bias.double()


def logistic_regression(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    l2: float,
    *,
    max_iter: int = 500,
    tolerance: float = 1e-9,
    start: LinearClassifier | None = None,
) -> LinearClassifier:
    """The L2-regularised multinomial logistic regression of ``features`` -> ``labels``
    (``start``: a warm start, e.g. the solution at a neighbouring ``l2``)."""
    x = features.double()
    y = labels.long()
    if start is None:
        weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64)
        bias = torch.zeros(num_classes, dtype=torch.float64)
    else:
        weight, bias = start.weight.double().clone(), start.bias.double().clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tolerance,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = F.cross_entropy(x @ weight.T + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(loss)
    return LinearClassifier(weight.detach(), bias.detach(), l2)


@dataclass
class LinearProbe:
    """The chosen classifier and what choosing it measured."""

    classifier: LinearClassifier
    val_accuracy: float
    #: l2 -> (validation accuracy, validation loss) for every strength tried.
    grid: dict[float, tuple[float, float]] = field(default_factory=dict)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=-1) == labels).double().mean()) if len(labels) else 0.0


@contextmanager
def one_thread() -> Iterator[None]:
    """Run small dense maths on one thread. At probe sizes (thousands x hundreds) each L-BFGS
    evaluation is microseconds of work; with several intra-op threads on a busy machine the
    threads' hand-offs cost 10-100x that (measured: 35 ms against 1 ms per evaluation)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Standardiser:
    """Per-feature centring and scaling fitted on the training rows.

    Backbone features share large common offsets and correlated directions, which leave the
    regression badly conditioned (L-BFGS then crawls to its iteration limit); on standardised
    features it converges in tens of iterations. The fitted classifier is folded back to the raw
    features exactly: ``W' (x - mu) / sd + b = (W' / sd) x + (b - (W' / sd) mu)``.
    """

    def __init__(self, x: torch.Tensor) -> None:
        x = x.double()
        self.mean = x.mean(dim=0)
        self.scale = x.std(dim=0, unbiased=False).clamp_min(1e-6)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.double() - self.mean) / self.scale

    def fold(self, classifier: LinearClassifier) -> LinearClassifier:
        weight = classifier.weight / self.scale
        return LinearClassifier(weight, classifier.bias - weight @ self.mean, classifier.l2)


def fit_linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    num_classes: int,
    grid: Sequence[float] = L2_GRID,
) -> LinearProbe:
    """Fit on the (standardised) training rows for each ``l2`` in ``grid``, strongest first,
    each warm-started from the previous solution, to a search tolerance; keep the best on
    validation and solve that one to full tolerance (the optimum scikit-learn finds for the same
    objective). ``l2`` applies to the weights of standardised features (so one grid suits every
    backbone's scale)."""
    standardise = Standardiser(train_x)
    x, xv = standardise(train_x), standardise(val_x)
    scores: dict[float, tuple[float, float]] = {}
    fitted: dict[float, LinearClassifier] = {}
    previous = None

    def score(classifier: LinearClassifier) -> tuple[float, float]:
        logits = classifier.logits(xv)
        return accuracy(logits, val_y), float(F.cross_entropy(logits, val_y.long()))

    with one_thread():
        for l2 in sorted(grid, reverse=True):
            previous = logistic_regression(
                x, train_y, num_classes, l2, max_iter=200, tolerance=1e-7, start=previous
            )
            scores[l2], fitted[l2] = score(previous), previous
        best = max(grid, key=lambda l2: (scores[l2][0], -scores[l2][1], l2))
        final = logistic_regression(x, train_y, num_classes, best, start=fitted[best])
    scores[best] = score(final)
    return LinearProbe(standardise.fold(final), scores[best][0], scores)


def knn_probabilities(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    query_x: torch.Tensor,
    num_classes: int,
    *,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """(Q, classes) vote shares of the temperature-weighted cosine k-NN."""
    if k < 1 or temperature <= 0:
        raise ValueError("k-NN needs k >= 1 and a temperature > 0")
    bank = F.normalize(train_x.double(), dim=-1)
    labels = train_y.long()
    k = min(k, bank.shape[0])
    out = []
    for start in range(0, query_x.shape[0], chunk):
        query = F.normalize(query_x[start : start + chunk].double(), dim=-1)
        similarity, nearest = (query @ bank.T).topk(k, dim=-1)
        votes = torch.zeros(query.shape[0], num_classes, dtype=torch.float64)
        votes.scatter_add_(1, labels[nearest], (similarity / temperature).exp())
        out.append(votes / votes.sum(dim=-1, keepdim=True))
    return torch.cat(out) if out else torch.zeros(0, num_classes, dtype=torch.float64)
