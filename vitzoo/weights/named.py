"""Named released weights: ``vit-s16.augreg-in21k-ft-in1k`` -> a model with those weights.

A preset's catalogue entry lists its releases as tags (:class:`vitzoo.registry.WeightTag`); a
name is ``PRESET.TAG`` in vitzoo's spelling or timm's (``vit_small_patch16_224.augreg_in21k_ft_in1k``:
the timm model name is an alias of the preset, the tag is the same with dashes), and
``pretrained=True`` takes the preset's default tag. The weights live in a Hugging Face
repository (timm's hub folders) and are resolved through ``huggingface_hub``
(:mod:`vitzoo.weights.hub`): downloaded where the network allows, read from the local cache under
``HF_HUB_OFFLINE=1``, and otherwise refused in one line naming the repository and the command
that fetches it. Loading is :func:`vitzoo.weights.load.load_pretrained` with the preset as the
target spec, so every tensor is accounted for and preprocessing travels with the weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitzoo.errors import WeightsError
from vitzoo.formats import HUB_PREFIX
from vitzoo.plugins import PluginSystem, get_plugin_system
from vitzoo.registry import PresetEntry, Registry, WeightTag
from vitzoo.suggest import did_you_mean
from vitzoo.weights.hub import ALLOW_PATTERNS, hub_offline
from vitzoo.weights.load import load_pretrained


@dataclass(frozen=True)
class NamedWeights:
    """One preset's tagged release."""

    preset: PresetEntry
    tag: WeightTag

    @property
    def name(self) -> str:
        """``vit-s16.augreg-in21k-ft-in1k``."""
        return f"{self.preset.name}.{self.tag.tag}"

    @property
    def source(self) -> str:
        """The weights source string :func:`~vitzoo.weights.load.load_pretrained` reads."""
        return f"{HUB_PREFIX}{self.tag.hub}"

    def fetch_command(self) -> str:
        return f"vitzoo weights {self.name} --download"


def find_tag(entry: PresetEntry, tag: str) -> NamedWeights:
    """``entry``'s tag ``tag`` (either spelling); an unknown one gets a suggestion."""
    found = entry.weight_tag(tag)
    if found is not None:
        return NamedWeights(entry, found)
    tags = [t.tag for t in entry.weights]
    if not tags:
        raise WeightsError(
            f"{entry.name}.{tag}: preset {entry.name!r} lists no released weights; "
            "`vitzoo list --pretrained` shows the presets that do"
        )
    raise WeightsError(
        f"{entry.name}.{tag}: no weights tagged {tag!r}"
        f"{did_you_mean(tag.replace('_', '-'), tags)}; {entry.name} has: {', '.join(tags)}"
    )


def named_weights(name: Any, registry: Registry) -> NamedWeights | None:
    """The release ``name`` (``PRESET.TAG``) stands for; None when ``name`` is not of that form
    (a preset, a file, a mapping). A known preset with an unknown tag is an error."""
    split = registry.split_weights_name(name) if isinstance(name, str) else None
    if split is None:
        return None
    entry, tag = split
    return find_tag(entry, tag)


def default_weights(name: str, registry: Registry) -> NamedWeights:
    """``pretrained=True``: the preset's default tag (or the tag ``name`` names)."""
    named = named_weights(name, registry)
    if named is not None:
        return named
    if ("preset", name) not in registry:
        raise WeightsError(
            f"{name}: pretrained=True takes a preset name (or PRESET.TAG); "
            "`vitzoo list --pretrained` shows the presets with released weights"
        )
    entry = registry.get("preset", name)
    tag = entry.default_weights
    if tag is None:
        if not entry.weights:
            raise WeightsError(
                f"{name}: preset {entry.name!r} lists no released weights; `vitzoo list "
                "--pretrained` shows the presets that do"
            )
        tags = ", ".join(t.tag for t in entry.weights)
        raise WeightsError(f"{name}: no default weights tag; name one: {entry.name}.TAG ({tags})")
    return NamedWeights(entry, tag)


def cached_folder(named: NamedWeights) -> Path | None:
    """The local snapshot of ``named`` in the Hugging Face cache, or None (no download)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        folder = snapshot_download(
            repo_id=named.tag.hub,
            allow_patterns=ALLOW_PATTERNS,
            local_files_only=True,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
        )
    except Exception:  # huggingface_hub raises several types for "not cached"
        return None
    return Path(folder)


def download(named: NamedWeights) -> Path:
    """Fetch ``named`` into the Hugging Face cache (needs the network and ``huggingface_hub``)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise WeightsError(
            f"{named.name}: needs huggingface_hub; pip install 'vitzoo[hub]'"
        ) from None
    try:
        folder = snapshot_download(
            repo_id=named.tag.hub,
            allow_patterns=ALLOW_PATTERNS,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
        )
    except Exception as exc:  # offline, 404, network: one line
        reason = " ".join(str(exc).split())[:160]
        raise WeightsError(
            f"{named.name}: could not download {named.tag.hub} ({type(exc).__name__}: {reason})"
        ) from None
    return Path(folder)


def target_overrides(named: NamedWeights, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's overrides, plus the release's class count unless the caller sets one."""
    out = dict(overrides)
    sets_classes = any(k in ("num_classes", "model.num_classes") for k in out)
    if named.tag.num_classes is not None and not sets_classes:
        out["model.num_classes"] = named.tag.num_classes
    return out


def checked_source(named: NamedWeights) -> str:
    """``named``'s weights source; offline without it in the cache, one line naming the
    repository and the command that fetches it."""
    if cached_folder(named) is not None:
        return named.source
    if hub_offline():
        raise WeightsError(
            f"{named.name}: {named.tag.hub} is not in the local Hugging Face cache and "
            f"HF_HUB_OFFLINE=1; fetch it once with network: `{named.fetch_command()}` "
            f"(or `hf download {named.tag.hub}`)"
        )
    try:
        download(named)
    except WeightsError as exc:  # no network here: say how to bring the weights in
        raise WeightsError(
            f"{exc}; on a machine with network run `{named.fetch_command()}` (or `hf download "
            f"{named.tag.hub}`), then use its cache here with HF_HUB_OFFLINE=1"
        ) from None
    return named.source


def load_named(
    named: NamedWeights,
    overrides: Mapping[str, Any] | None = None,
    *,
    system: PluginSystem | None = None,
    log: Callable[[str], None] | None = None,
    macs: bool = False,
) -> Any:
    """Build ``named``'s preset (with ``overrides``) holding its weights: a
    :class:`~vitzoo.weights.load.Pretrained`. Offline without the weights cached: one line
    naming the repository and the command that fetches it."""
    system = system or get_plugin_system()
    return load_pretrained(
        checked_source(named),
        {"preset": named.preset.name},
        overrides=target_overrides(named, overrides or {}),
        system=system,
        log=log,
        macs=macs,
    )
