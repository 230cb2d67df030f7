"""``train.init_from``: a training run's model started from any weights source, named releases
(``PRESET.TAG``) included, and the data settings the weights bring.

Above both the loader (:mod:`vitzoo.weights.load`) and the named releases
(:mod:`vitzoo.weights.named`), which it joins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from torch import nn

from vitzoo.plugins import PluginSystem, get_plugin_system
from vitzoo.spec import SpecBase
from vitzoo.weights import preprocessing as prep
from vitzoo.weights.load import load_pretrained
from vitzoo.weights.named import checked_source, named_weights

logger = logging.getLogger("vitzoo.weights")


def fine_tune_start(
    spec: SpecBase,
    *,
    system: PluginSystem | None = None,
    log: Callable[[str], None] | None = None,
    class_names: Sequence[str] | None = None,
) -> tuple[SpecBase, nn.Module]:
    """``train.init_from``: the model for ``spec`` started from that source (a named release
    ``PRESET.TAG`` too; head rows matched to ``class_names``, the data's classes, where the
    source names its own), and the spec with the weights' normalisation / eval crop wherever it
    keeps vitzoo's defaults."""
    source = spec.train.init_from
    named = named_weights(source, (system or get_plugin_system()).registry)
    if named is not None:
        source = checked_source(named)
    loaded = load_pretrained(source, spec, system=system, log=log, class_names=class_names)
    updates = prep.data_overrides(loaded.preprocessing, spec.data)
    if updates:
        spec = spec.model_copy(update={"data": spec.data.model_copy(update=updates)})
        (log or logger.info)(  # the spec says it too: not an adaptation of the weights
            "data normalisation from the weights: "
            + ", ".join(f"data.{k}={v}" for k, v in updates.items())
        )
    loaded.model.vitzoo_spec = spec
    return spec, loaded.model
