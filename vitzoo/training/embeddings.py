"""``vitzoo embed``: a backbone's features of every image of a folder, in one safetensors file.

Which features (``features=``):

* ``auto`` (default) -- the release's recommendation: what the architecture's config declares as
  ``probe_features`` (DINOv2: ``cls-mean``, its model card's linear-probe input), else ``model``;
* ``model`` -- what the model's own pooling hands its classifier
  (``forward_head(forward_features(x), pre_logits=True)``): what the released head was trained
  on, and defined for every architecture;
* ``cls`` / ``mean`` -- the class token / the mean of the patch tokens, for models whose pooling
  can be swapped (``set_global_pool``; the ViT family);
* ``cls-mean`` -- both, concatenated (the DINOv2 linear-evaluation input, registers left out).

For ``cls`` / ``mean`` the model's pooling is switched (:func:`feature_model`), and for
``cls-mean`` too where the model has that pooling and no norm of the pooled vector, so a probe
fitted on these features and installed as the classifier computes exactly the probed function.
Elsewhere ``cls-mean`` is the two poolings' outputs side by side: embeddings only, since no
single linear head of the model sees them.

Images are read through :mod:`vitzoo.data` (the model's evaluation preprocessing, batched by a
data loader with workers); the file is written atomically (a kill leaves the old file or none).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitzoo.checkpoint import atomic_save_tensors, read_checkpoint
from vitzoo.data.config import ResolvedDataConfig, resolve_data_config
from vitzoo.data.folders import EpochBatches, FolderDataset, SampleIndex, loader
from vitzoo.errors import DataError, InputError
from vitzoo.plugins import PluginSystem

FEATURES = ("auto", "model", "cls", "mean", "cls-mean")
#: ``set_global_pool`` names of the poolings behind ``cls`` / ``mean`` / ``cls-mean``.
POOLS = {"cls": "cls", "mean": "mean", "cls-mean": "cls-mean"}
EMBED_KEY = "vitzoo.embeddings"
#: Progress callback: (images done, images in total).
Progress = Callable[[int, int], None]


def load_backbone(
    source: str,
    *,
    pretrained: bool = False,
    image_size: int | list[int] | None = None,
    system: PluginSystem | None = None,
) -> nn.Module:
    """``source`` as a model: a checkpoint / weights file or folder, or what ``vitzoo.build``
    takes (preset, ``PRESET.TAG``, spec file; ``pretrained`` takes the default weights tag);
    ``image_size`` builds it at another input size (the weights adapted: positions resampled)."""
    import vitzoo
    from vitzoo.weights.sources import is_weights_source

    size = {} if image_size is None else {"image_size": image_size}
    if not pretrained and is_weights_source(source):
        return vitzoo.build(weights=source, system=system, **size)
    return vitzoo.build(source, pretrained=pretrained, system=system, **size)


def recommended_features(model: nn.Module) -> str:
    """What ``auto`` stands for: the architecture config's ``probe_features``, else ``model``."""
    features = getattr(getattr(model, "config", None), "probe_features", "model")
    return features if features in FEATURES and features != "auto" else "model"


def resolve_features(model: nn.Module, features: str) -> str:
    """``features`` with ``auto`` replaced by the model's recommendation (checked)."""
    if features not in FEATURES:
        raise InputError(f"--features {features!r}: allowed {', '.join(FEATURES)}")
    return recommended_features(model) if features == "auto" else features


def current_pool(model: nn.Module) -> str | None:
    """The registered pooling ``model`` uses (the ViT family), or None."""
    pool = getattr(getattr(model, "config", None), "pool", None)
    return getattr(pool, "type", None)


def _pools_itself(model: nn.Module, features: str) -> bool:
    """Whether switching ``model``'s pooling to ``features`` gives exactly these features: a
    norm of the pooled vector (BEiT's fc_norm) would be rebuilt fresh at 2 D for cls-mean."""
    if features != "cls-mean":
        return True
    return isinstance(getattr(model, "fc_norm", nn.Identity()), nn.Identity)


def feature_model(model: nn.Module, features: str) -> nn.Module:
    """``model`` itself (``model``), or a copy pooling with ``cls`` / ``mean`` / ``cls-mean``
    (where cls-mean is not a pooling the model can take: a copy whose pooling
    :func:`embed_batch` switches between cls and mean)."""
    features = resolve_features(model, features)
    if features == "model" or current_pool(model) == POOLS.get(features):
        return model
    choices = model.global_pool_choices() if hasattr(model, "global_pool_choices") else []
    if not all(POOLS[p] in choices for p in ("cls", "mean") if p in features.split("-")):
        raise InputError(
            f"--features {features}: this {type(model).__name__} pools its own way "
            f"(poolings: {', '.join(choices) or 'fixed'}); use --features model"
        )
    variant = copy.deepcopy(model)
    if POOLS[features] in choices and _pools_itself(model, features):
        variant.set_global_pool(POOLS[features])
    return variant


def probe_ready(model: nn.Module, features: str) -> None:
    """A probe on ``features`` can become ``model``'s classifier (``model`` from
    :func:`feature_model`): refused in words before any embedding otherwise."""
    if features == "cls-mean" and current_pool(model) != "cls-mean":
        raise InputError(
            f"--features cls-mean: this {type(model).__name__} cannot pool cls-mean itself "
            "(no such pooling, or a norm of the pooled vector), so no linear head of it reads "
            "these features; use vitzoo embed for them, or probe cls / mean"
        )


def embed_batch(model: nn.Module, images: torch.Tensor, features: str) -> torch.Tensor:
    """(B, D) features of one preprocessed batch (``model`` from :func:`feature_model`)."""
    tokens = model.forward_features(images)
    if features != "cls-mean" or current_pool(model) == "cls-mean":
        pooled = model.forward_head(tokens, pre_logits=True)
        if pooled.ndim != 2:
            raise InputError(
                f"--features {features}: this {type(model).__name__} pools to "
                f"{tuple(pooled.shape[1:])} per image (several tokens), not one vector; "
                "try --features cls or mean"
            )
        return pooled
    parts = []
    for pool in ("cls", "mean"):
        model.set_global_pool(pool)
        parts.append(model.forward_head(tokens, pre_logits=True))
    return torch.cat(parts, dim=-1)


@dataclass
class Embedded:
    """One split's features, labels and file paths (rows in the same order)."""

    features: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def embed_index(
    model: nn.Module,
    index: SampleIndex,
    data: ResolvedDataConfig,
    features: str,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "cpu",
    progress: Progress | None = None,
) -> Embedded:
    """Features of every sample of ``index`` (evaluation preprocessing, in order)."""
    from vitzoo.data.transforms import create_transform

    dataset = FolderDataset(index, create_transform(data, train=False), seed=0, strict=True)
    sampler = EpochBatches(len(dataset), batch_size, epoch=0, seed=0, train=False)
    run = model.to(device).eval()
    rows: list[torch.Tensor] = []
    done = 0
    with torch.no_grad():
        for images, _ in loader(dataset, sampler, num_workers):
            rows.append(embed_batch(run, images.to(device), features).float().cpu())
            done += images.shape[0]
            if progress is not None:
                progress(done, len(dataset))
    labels = torch.tensor([label for _, label in index.samples], dtype=torch.int64)
    return Embedded(
        torch.cat(rows),
        labels,
        [str(p) for p, _ in index.samples],
        [(str(p), why) for p, why in index.skipped],
    )


def scan_splits(data_dir: Path, train: str = "train", val: str = "val") -> dict[str, SampleIndex]:
    """``DIR/train`` and (when present) ``DIR/val`` class folders, one class order; a folder of
    class folders alone is one split, ``train``."""
    if (data_dir / train).is_dir():
        splits = {"train": SampleIndex.scan(data_dir / train)}
        if (data_dir / val).is_dir():
            splits["val"] = SampleIndex.scan(data_dir / val, splits["train"].classes)
        return splits
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such dataset folder")
    return {"train": SampleIndex.scan(data_dir)}


def weights_digest(model: nn.Module) -> str:
    """A SHA-256 of ``model``'s tensors (names, dtypes, shapes, bytes): which backbone computed
    a file of embeddings, however its source was spelled (a path, a tag, a preset)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class EmbeddingSet:
    """What ``vitzoo embed`` writes: per split features and labels, the classes, and how
    (``backbone``: the :func:`weights_digest` of the model that computed them)."""

    splits: dict[str, Embedded]
    classes: list[str]
    features: str
    source: str
    seconds: float = 0.0
    backbone: str = ""

    def save(self, path: str | Path) -> Path:
        tensors: dict[str, torch.Tensor] = {}
        paths: dict[str, list[str]] = {}
        for name, split in self.splits.items():
            tensors[f"{name}.features"] = split.features.contiguous()
            tensors[f"{name}.labels"] = split.labels.contiguous()
            paths[name] = split.paths
        meta = {
            "classes": self.classes,
            "features": self.features,
            "source": self.source,
            "backbone": self.backbone,
            "paths": paths,
            "seconds": round(self.seconds, 3),
        }
        atomic_save_tensors(tensors, path, {EMBED_KEY: json.dumps(meta)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingSet:
        tensors, metadata = read_checkpoint(path)
        if EMBED_KEY not in metadata:
            raise InputError(f"{path}: not an embeddings file written by vitzoo embed")
        meta = json.loads(metadata[EMBED_KEY])
        splits = {
            name: Embedded(tensors[f"{name}.features"], tensors[f"{name}.labels"], list(files))
            for name, files in meta["paths"].items()
        }
        return cls(
            splits,
            list(meta["classes"]),
            meta["features"],
            meta["source"],
            backbone=meta.get("backbone", ""),
        )

    def check_backbone(self, model: nn.Module, path: str | Path) -> None:
        """Refuse embeddings another backbone computed: a probe fitted on them and installed
        in ``model`` would compute something else than it reports."""
        if self.backbone and self.backbone != weights_digest(model):
            raise InputError(
                f"{path} holds embeddings of another backbone ({self.source}); embed the "
                "images with this SOURCE, or probe the SOURCE the file was made with"
            )


def embed_folder(
    model: nn.Module,
    data_dir: str | Path,
    *,
    features: str = "auto",
    source: str = "",
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "cpu",
    progress: Progress | None = None,
) -> tuple[EmbeddingSet, nn.Module]:
    """Embed every split of ``data_dir``; returns the set (``features`` resolved: ``auto`` is
    recorded as what it stood for) and the model whose pooling gives these features (``model``
    itself, or a copy pooling otherwise)."""
    import time

    started = time.perf_counter()
    features = resolve_features(model, features)
    extractor = feature_model(model, features)
    data = resolve_data_config(extractor)
    splits = scan_splits(Path(data_dir))
    total = sum(len(s) for s in splits.values())
    offset = 0
    embedded: dict[str, Embedded] = {}
    for name, index in splits.items():
        tick = None if progress is None else _shifted(progress, offset, total)
        embedded[name] = embed_index(
            extractor,
            index,
            data,
            features,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            progress=tick,
        )
        offset += len(index)
    result = EmbeddingSet(
        embedded,
        splits["train"].classes,
        features,
        source,
        time.perf_counter() - started,
        backbone=weights_digest(model),
    )
    return result, extractor


def _shifted(progress: Progress, offset: int, total: int) -> Progress:
    return lambda done, _: progress(offset + done, total)


def describe(result: EmbeddingSet) -> dict[str, Any]:
    """A JSON-able summary (rows and width per split)."""
    return {
        "features": result.features,
        "classes": result.classes,
        "source": result.source,
        "seconds": round(result.seconds, 3),
        "splits": {n: list(s.features.shape) for n, s in result.splits.items()},
    }
