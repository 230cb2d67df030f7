"""A timm hub folder's ``config.json`` -> the vitzoo spec of the same model, for timm converters.

timm's hub folders (``hf-hub:timm/xcit_tiny_12_p16_224.fb_in1k``) name the architecture, the
class count and the input size, not the layer sizes. A converter's ``equivalents`` already pair
each vitzoo preset with its timm name, so the spec is that preset's, with the folder's class
count, channels and image size: weights load without the user naming a preset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vitzoo_plugins._catalogue import catalogue

from vitzoo.weights import WeightsError


def timm_spec_from_config(
    equivalents: tuple[tuple[str, str], ...],
) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """``spec_from_config`` for a timm converter whose ``equivalents`` are (preset, timm name)."""
    presets = {timm_name: preset for preset, timm_name in equivalents}

    def spec_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
        arch = str(config.get("architecture", ""))
        preset = presets.get(arch)
        if preset is None:
            raise WeightsError(
                f"timm architecture {arch!r} has no vitzoo equivalent; known: "
                f"{', '.join(sorted(presets))} (or pass a preset whose layers match)"
            )
        model = dict(catalogue()[preset]["spec"]["model"])
        model["num_classes"] = config.get("num_classes", model.get("num_classes"))
        pretrained = config.get("pretrained_cfg") or {}
        input_size = pretrained.get("input_size") if isinstance(pretrained, Mapping) else None
        if input_size:
            model["in_chans"] = input_size[0]
            height, width = input_size[1:]
            model["image_size"] = height if height == width else [height, width]
        return {"model": model}

    return spec_from_config
