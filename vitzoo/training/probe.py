"""``vitzoo probe``: a classifier on a frozen backbone's embeddings, saved as a normal checkpoint.

The steps: embed the folder's splits once (:mod:`vitzoo.training.embeddings`; or reuse an
embeddings file), fit the logistic regression with its regularisation chosen on the validation
split and score the DINO k-NN beside it (:mod:`vitzoo.training.probes`), then install the
fitted weights as the model's classifier and save it. The checkpoint is the backbone with that
head -- its pooling the one the features were taken with -- so ``predict``, ``evaluate`` and
``export`` read it like any other, and its outputs are the probe's logits.

Without a validation split one in five training images (every fifth, in order) is held out to
choose the regularisation; the final classifier is the one fitted on the training rows.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitzoo.checkpoint import save
from vitzoo.errors import InputError
from vitzoo.formats import CLASSES_KEY
from vitzoo.training.embeddings import Embedded, EmbeddingSet
from vitzoo.training.probes import (
    L2_GRID,
    LinearClassifier,
    accuracy,
    fit_linear_probe,
    knn_probabilities,
)

PROBE_KEY = "vitzoo.probe"


@dataclass
class ProbeReport:
    """What a probe measured: accuracies, the chosen strength and the time each step took."""

    classes: list[str]
    features: str
    l2: float
    val_accuracy: float
    train_accuracy: float
    knn_accuracy: float
    k: int
    temperature: float
    samples: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)
    grid: dict[str, list[float]] = field(default_factory=dict)
    held_out: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def split_for_validation(embedded: EmbeddingSet) -> tuple[Embedded, Embedded, bool]:
    """(training rows, validation rows, whether validation was held out of train)."""
    train = embedded.splits["train"]
    if "val" in embedded.splits:
        return train, embedded.splits["val"], False
    rows = torch.arange(len(train.labels))
    held = rows % 5 == 4
    if held.sum() == 0:
        raise InputError("a probe needs a validation split (DIR/val) or at least 5 images")

    def part(mask: torch.Tensor) -> Embedded:
        paths = [p for p, m in zip(train.paths, mask.tolist(), strict=True) if m]
        return Embedded(train.features[mask], train.labels[mask], paths)

    return part(~held), part(held), True


def fit(
    embedded: EmbeddingSet,
    *,
    k: int = 20,
    temperature: float = 0.07,
    grid: tuple[float, ...] = L2_GRID,
) -> tuple[LinearClassifier, ProbeReport]:
    """The logistic-regression probe (chosen on validation) and the k-NN score beside it."""
    classes = embedded.classes
    if len(classes) < 2:
        raise InputError(
            f"a probe tells classes apart, and the data has {len(classes)} "
            f"({', '.join(classes) or 'none'}); give a folder per class"
        )
    train, val, held_out = split_for_validation(embedded)
    started = time.perf_counter()
    probe = fit_linear_probe(
        train.features, train.labels, val.features, val.labels, len(classes), grid
    )
    linear_seconds = time.perf_counter() - started
    started = time.perf_counter()
    votes = knn_probabilities(
        train.features, train.labels, val.features, len(classes), k=k, temperature=temperature
    )
    knn_seconds = time.perf_counter() - started
    chosen = probe.classifier
    report = ProbeReport(
        classes=list(classes),
        features=embedded.features,
        l2=chosen.l2,
        val_accuracy=probe.val_accuracy,
        train_accuracy=accuracy(chosen.logits(train.features), train.labels),
        knn_accuracy=accuracy(votes, val.labels),
        k=k,
        temperature=temperature,
        samples={"train": len(train.labels), "val": len(val.labels)},
        seconds={
            "embed": round(embedded.seconds, 3),
            "linear": round(linear_seconds, 3),
            "knn": round(knn_seconds, 3),
        },
        grid={f"{l2:g}": list(score) for l2, score in probe.grid.items()},
        held_out=held_out,
    )
    return chosen, report


def install_head(model: nn.Module, classifier: LinearClassifier) -> nn.Module:
    """``model`` with a fresh classifier holding ``classifier``'s weights. Only a classifier that
    is one linear layer can hold them; another (a distillation pair, a BatchNorm or MLP head) is
    refused in words."""
    num_classes, width = classifier.weight.shape
    model.reset_classifier(num_classes)
    head = model.get_classifier()
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    params = sum(p.numel() for p in head.parameters())
    if len(linears) != 1 or params != classifier.weight.numel() + classifier.bias.numel():
        raise InputError(
            f"a probe is one linear layer, but this {type(model).__name__}'s classifier is "
            f"{type(head).__name__} ({params} parameters); probe a model with a linear head"
        )
    if linears[0].in_features != width:
        raise InputError(
            f"the probe reads {width} features but the model's classifier takes "
            f"{linears[0].in_features}; --features cls-mean cannot be a head of this model"
        )
    with torch.no_grad():
        linears[0].weight.copy_(classifier.weight.to(linears[0].weight.dtype))
        linears[0].bias.copy_(classifier.bias.to(linears[0].bias.dtype))
    if hasattr(model, "vitzoo_spec") and hasattr(model.vitzoo_spec, "model"):
        spec = model.vitzoo_spec
        model.vitzoo_spec = spec.model_copy(
            update={"model": spec.model.model_copy(update={"num_classes": num_classes})}
        )
    return model.eval()


def save_probe(
    model: nn.Module, classifier: LinearClassifier, report: ProbeReport, path: str | Path
) -> Path:
    """The backbone with the fitted classifier, its classes and the probe's report, as a normal
    vitzoo checkpoint."""
    model = install_head(model, classifier)
    metadata = {CLASSES_KEY: json.dumps(report.classes), PROBE_KEY: json.dumps(report.to_dict())}
    return save(model, path, metadata=metadata)
