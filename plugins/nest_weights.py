"""Weight converter: timm's NesT (``timm.models.nest.Nest``) into vitzoo ``nest``.

Data only: renames. timm's ``levels.L`` (``pos_embed``, ``pool`` = conv / LayerNorm / max-pool
aggregation, ``transformer_encoder.N``) are vitzoo's ``stages.L`` (``pos_embed``,
``aggregate``, ``blocks.N``); both keep the position table as (1, blocks, tokens, dim).

The released weights are ``nest_*_jx`` (the authors' JAX models), which the ``nest`` presets
build: TensorFlow "SAME" padding before each max-pool. timm's ``nest_tiny`` / ``nest_small`` /
``nest_base`` (PyTorch padding) have exactly the same keys and shapes, so a checkpoint cannot
say which it is; the converter states what it assumes and every load reports it. (Comparing the
meta-device layouts of every timm model of the families converted here with the released ones,
this is the only same-layout pair that computes a different function: vit_base_patch16_384 is
deit_base_patch16_384's architecture, xcit_*_p16_384 the 224-px models' at another input size.)
"""

from __future__ import annotations

from vitzoo.weights import Rename, WeightConverter

TIMM_NEST = WeightConverter(
    name="timm-nest",
    source="timm",
    architectures=("nest",),
    rules=(
        Rename(r"patch_embed\.proj\.(weight|bias)", r"stem.\1"),
        Rename(r"levels\.(\d+)\.pos_embed", r"stages.\1.pos_embed"),
        Rename(r"levels\.(\d+)\.pool\.(conv|norm)\.(weight|bias)", r"stages.\1.aggregate.\2.\3"),
        Rename(r"levels\.(\d+)\.transformer_encoder\.(\d+)\.(.+)", r"stages.\1.blocks.\2.\3"),
        Rename(r"norm\.(weight|bias)", r"norm.\1"),
        Rename(r"head\.(weight|bias)", r"head.fc.\1"),
    ),
    config_names=("nest_",),
    summary="timm Nest state dicts (the authors' JAX weights as ported by timm)",
    assumes=(
        "timm nest_*_jx (JAX 'same' padding before each max-pool); timm's PyTorch-padded "
        "nest_tiny/small/base have the same keys but compute a different function (build "
        "with model.padding=symmetric for those)"
    ),
    verified_by="tests/test_weights_timm.py",
)

CONVERTERS = (TIMM_NEST,)
