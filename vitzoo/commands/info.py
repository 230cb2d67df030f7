"""``vitzoo info CKPT|SOURCE``: what a checkpoint or weights source holds, without loading it.

A converted or trained checkpoint is a model plus what it learned and how to feed it; before
this command a user could not see that (``vitzoo build - --weights X --json`` leaves the spec
out). It prints the model's spec, its classes, the preprocessing ``predict`` / ``evaluate`` /
``train`` will use (:func:`vitzoo.data.resolve_data_config`, so the same answer), and where the
weights came from. Nothing is converted: a vitzoo checkpoint's metadata, or a Hugging Face /
timm folder's ``config.json``, is read without its tensors (a ``.pth``/``.bin`` pickle can only
be read whole); the parameter count comes from a build on the meta device.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from vitzoo.commands.common import human_count, out
from vitzoo.commands.errors import user_errors
from vitzoo.formats import (
    FORMAT_KEY,
    VERSION_KEY,
    WEIGHT_FORMATS,
    WEIGHTS_CONVERTER_KEY,
    WEIGHTS_SOURCE_KEY,
)

#: Metadata ``vitzoo train`` writes into its checkpoints (vitzoo.training.state).
TRAINED_EPOCH_KEY = "vitzoo.train.epoch"
TRAINED_STEP_KEY = "vitzoo.train.step"


def _provenance(src: Any, spec: Any, converter: str | None) -> dict[str, Any]:
    """Where the weights came from, as far as the source says."""
    meta = src.metadata
    found: dict[str, Any] = {"location": src.location, "format": src.format}
    if src.format != "vitzoo":
        found["converter"] = converter
        return found
    for key, name in (
        (VERSION_KEY, "written_by_vitzoo"),
        (FORMAT_KEY, "checkpoint_format"),
        (WEIGHTS_SOURCE_KEY, "converted_from"),
        (WEIGHTS_CONVERTER_KEY, "converter"),
        (TRAINED_EPOCH_KEY, "trained_epochs"),
        (TRAINED_STEP_KEY, "trained_steps"),
    ):
        if key in meta:
            found[name] = int(meta[key]) if name.startswith("trained_") else meta[key]
    init_from = getattr(getattr(spec, "train", None), "init_from", None)
    if init_from and TRAINED_EPOCH_KEY in meta:
        found["fine_tuned_from"] = init_from
    return found


def describe(source: str, fmt: str | None = None) -> dict[str, Any]:
    """Everything ``vitzoo info`` prints, as JSON-ready data."""
    import torch

    from vitzoo.builder import build_from_spec
    from vitzoo.data.config import resolve_data_config
    from vitzoo.plugins import get_plugin_system
    from vitzoo.spec import spec_to_dict
    from vitzoo.spec.sources import validate_source
    from vitzoo.weights.source_spec import model_of_source, preprocessing_of, source_spec
    from vitzoo.weights.sources import read_source

    system = get_plugin_system()
    src = read_source(source, fmt, tensors=False)
    data, converter = source_spec(src, None, system)
    if data is None:  # a plain state dict: the preset its file name names, else an error
        data = {"model": model_of_source(source, system, format=fmt)}
    spec, _ = validate_source(data, system.registry)
    pre = preprocessing_of(src)
    metadata = src.metadata if src.format == "vitzoo" else pre.to_metadata()
    config = resolve_data_config(spec, checkpoint=metadata)
    with torch.device("meta"):
        params = sum(p.numel() for p in build_from_spec(spec, system=system).parameters())
    return {
        "source": str(source),
        "architecture": spec.model.type,
        "params": params,
        "classes": list(config.class_names) if config.class_names is not None else None,
        "preprocessing": {**config.to_dict(), "sources": dict(config.sources)},
        "provenance": _provenance(src, spec, converter.name if converter else None),
        "spec": spec_to_dict(spec),
    }


def print_info(info: dict[str, Any]) -> None:
    """The description as a person reads it: headline lines, then the spec as YAML."""
    import yaml

    pre, prov = info["preprocessing"], info["provenance"]
    classes = info["classes"]
    shown = "(not named)" if classes is None else ", ".join(classes[:20])
    if classes is not None and len(classes) > 20:
        shown += f", ... ({len(classes) - 20} more)"
    lines = [
        f"{info['source']}: {info['architecture']}, {human_count(info['params'])} parameters "
        f"({info['params']:,})",
        f"classes ({len(classes) if classes is not None else '?'}): {shown}",
        f"preprocessing: input {tuple(pre['input_size'])}, mean {tuple(pre['mean'])}, std "
        f"{tuple(pre['std'])}, crop_pct {pre['crop_pct']}, {pre['interpolation']}",
        "provenance: " + ", ".join(f"{k} {v}" for k, v in prov.items() if v is not None),
        "spec (the model; --json gives every section):",
    ]
    for line in lines:
        out.print(line, markup=False, highlight=False)
    model = {k: v for k, v in info["spec"].items() if k in ("model", "objective") and v}
    out.print(yaml.safe_dump(model, sort_keys=False).rstrip(), markup=False, highlight=False)


@click.command("info")
@click.argument("source", metavar="CKPT|SOURCE")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(WEIGHT_FORMATS),
    default=None,
    help="Override the detected weights format.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info_command(source: str, fmt: str | None, as_json: bool) -> None:
    """What a checkpoint or weights source holds: its spec, classes, the preprocessing
    predict/evaluate/train use, and where the weights came from.

    SOURCE: a vitzoo checkpoint (.safetensors), a timm state dict, a Hugging Face model folder
    or hf-hub:ORG/NAME. Nothing is converted or loaded.
    """
    if not Path(source).exists() and not source.startswith("hf-hub:"):
        from vitzoo.commands.errors import fail_plainly

        fail_plainly(f"{source}: no such checkpoint file or weights folder")
    with user_errors():
        info = describe(source, fmt)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    print_info(info)


COMMANDS = [info_command]
