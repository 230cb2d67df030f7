"""Fixtures: timm's Swin and Swin V2 at a tiny width, and the same models in the official
Microsoft checkpoint layout.

Three stages on a non-square 36 x 44 input with 2 px patches: maps of 18 x 22, 9 x 11 and 5 x 6.
Windows of 4, 4 and 5: no stage map tiles into its windows, so every block pads, and every odd
block is shifted (stage 0 and 1: shift 2 on both axes, padding 2-3 after the shift; stage 2:
the 5-row axis fits one window, so timm shrinks the window to 5 and drops the shift on that axis
only, keeping it on the 6-column axis). Swin V2 is fine-tuned at those windows from pre-training
windows of 2, 3 and (stage 2) its own, so the continuous position bias extrapolates.

The official layout (``official-swin``, ``official-swinv2``): the Microsoft code downsamples at
the end of a stage (``layers.{i}.downsample``), names its head ``head``, and saves the derived
buffers (relative position index, shift masks, Swin V2's coordinate table) in the checkpoint.
The Microsoft repository is a set of training scripts, not an installable package, so the
fixture is the timm model re-keyed the way timm's own ``checkpoint_filter_fn`` reads official
checkpoints; :func:`check_timm_reads_it` proves that filter maps it back onto the timm model
exactly. (Checked once by hand against microsoft/Swin-Transformer's own ``SwinTransformer`` and
``SwinTransformerV2`` at a 64 px size their code accepts, which does not pad: the same keys,
shapes and buffers as :func:`official_state_dict`, and outputs equal to timm's, float32 and
float64.) The saved buffers are perturbed copies: vitzoo must leave them unused.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from reference_fixtures import Fixture, perturb_

TINY = {
    "img_size": (36, 44),
    "patch_size": 2,
    "embed_dim": 6,
    "depths": (2, 2, 2),
    "num_heads": (2, 2, 4),
    "window_size": (4, 4, 5),
    "mlp_ratio": 2.0,
    "num_classes": 5,
}
TINY_V2 = {**TINY, "pretrained_window_sizes": (2, 3, 0)}
#: The official-layout fixtures test the re-keying (one downsample moved, the head, the saved
#: buffers), which two stages show; the function itself is the timm fixtures' job.
OFFICIAL = {**TINY, "depths": (2, 2), "num_heads": (2, 2), "window_size": (4, 4)}
OFFICIAL_V2 = {**OFFICIAL, "pretrained_window_sizes": (2, 3)}

#: At these widths the driver's default noise (0.05) leaves attention near uniform; 0.3 makes a
#: swapped query / key move the logits by far more than the tolerance.
NOISE = 0.3


def _swin(tiny: dict = TINY) -> nn.Module:
    import timm

    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **tiny)


def _swinv2(tiny: dict = TINY_V2) -> nn.Module:
    import timm

    return timm.create_model("swinv2_tiny_window8_256", pretrained=False, **tiny)


def official_key(key: str) -> str:
    """timm >= 0.9 key -> the Microsoft checkpoint's key (inverse of timm's filter)."""
    key = re.sub(
        r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key
    )
    return re.sub(r"^head\.fc\.", "head.", key)


_OFFICIAL_BUFFERS = ("relative_position_index", "attn_mask", "relative_coords_table")


def official_state_dict(model: nn.Module, keep_vars: bool = False) -> dict[str, torch.Tensor]:
    """``model``'s (timm) state dict in the official layout, with the official buffers."""
    state = {official_key(k): v for k, v in model.state_dict(keep_vars=keep_vars).items()}
    for name, buffer in model.named_buffers():
        if name.rpartition(".")[2] in _OFFICIAL_BUFFERS:
            state[official_key(name)] = buffer.detach().clone()
    return state


def check_timm_reads_it(model: nn.Module, v2: bool) -> None:
    """timm's own ``checkpoint_filter_fn`` turns the official layout back into ``model``'s."""
    if v2:
        from timm.models.swin_transformer_v2 import checkpoint_filter_fn
    else:
        from timm.models.swin_transformer import checkpoint_filter_fn
    filtered = checkpoint_filter_fn(official_state_dict(model), model)
    own = model.state_dict()
    if filtered.keys() != own.keys() or any(not torch.equal(filtered[k], own[k]) for k in own):
        raise SystemExit("official layout: timm's checkpoint_filter_fn does not read it back")


class OfficialLayout(nn.Module):
    """The timm model, its state dict in the official layout (tensors shared, so the driver's
    perturbation moves the model; the official buffers are copies, so their noise does not)."""

    def __init__(self, model: nn.Module, v2: bool) -> None:
        super().__init__()
        check_timm_reads_it(model, v2)
        self.model = model
        self.buffers_copy = {
            k: v for k, v in official_state_dict(model).items() if k.endswith(_OFFICIAL_BUFFERS)
        }

    def state_dict(self, *args, keep_vars: bool = False, **kwargs):  # type: ignore[override]
        state = official_state_dict(self.model, keep_vars=keep_vars)
        return {**state, **self.buffers_copy}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


#: ``timm-swinv2-resized``: the two-stage V2 model built at 36 x 44 / windows 4, then moved by
#: timm's own ``set_input_size`` to 52 x 60 with windows 6 (its CPB needs no resampling, so
#: vitzoo's ``set_input_size`` must give exactly this function).
RESIZED = {"img_size": (52, 60), "window_size": (6, 6)}


def _swinv2_resized() -> nn.Module:
    model = _swinv2(OFFICIAL_V2)
    model.set_input_size(img_size=RESIZED["img_size"], window_size=RESIZED["window_size"])
    return model


#: ``timm-swin-resized``: ``timm-swin``'s weights (same seed and noise, perturbed here as the
#: driver perturbs ``timm-swin``), moved by timm's own ``set_input_size`` to 52 x 60 with windows
#: of 6: every learned table is resampled by ``resize_rel_pos_bias_table`` (geometric offsets).
RESIZED_V1 = {"img_size": (52, 60), "window_size": (6, 6)}


def _swin_resized() -> nn.Module:
    model = perturb_(_swin(), seed=0, noise=NOISE)
    model.set_input_size(img_size=RESIZED_V1["img_size"], window_size=RESIZED_V1["window_size"])
    return model


def _meta(tiny: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in tiny.items()}


def _constructor(name: str, tiny: dict) -> str:
    return f"timm.create_model({name!r}, " + ", ".join(f"{k}={v!r}" for k, v in tiny.items()) + ")"


FIXTURES = [
    Fixture(
        name="timm-swin",
        build=_swin,
        input_shape=(2, 3, *TINY["img_size"]),
        constructor=_constructor("swin_tiny_patch4_window7_224", TINY),
        meta={"timm_name": "swin_tiny_patch4_window7_224", **_meta(TINY)},
        noise=NOISE,
    ),
    Fixture(
        name="timm-swin-resized",
        build=_swin_resized,
        input_shape=(2, 3, *RESIZED_V1["img_size"]),
        constructor=_constructor("swin_tiny_patch4_window7_224", TINY)
        + ", perturbed as timm-swin, "
        + f".set_input_size(img_size={RESIZED_V1['img_size']}, "
        + f"window_size={RESIZED_V1['window_size']})",
        meta={
            "timm_name": "swin_tiny_patch4_window7_224",
            **_meta(TINY),
            "resized": _meta(RESIZED_V1),
        },
        noise=0.0,
    ),
    Fixture(
        name="timm-swinv2",
        build=_swinv2,
        input_shape=(2, 3, *TINY_V2["img_size"]),
        constructor=_constructor("swinv2_tiny_window8_256", TINY_V2),
        meta={"timm_name": "swinv2_tiny_window8_256", **_meta(TINY_V2)},
        noise=NOISE,
    ),
    Fixture(
        name="timm-swinv2-resized",
        build=_swinv2_resized,
        input_shape=(1, 3, *RESIZED["img_size"]),
        constructor=_constructor("swinv2_tiny_window8_256", OFFICIAL_V2)
        + f".set_input_size(img_size={RESIZED['img_size']}, window_size={RESIZED['window_size']})",
        meta={
            "timm_name": "swinv2_tiny_window8_256",
            **_meta(OFFICIAL_V2),
            "resized": _meta(RESIZED),
        },
        noise=NOISE,
        seed=2,
    ),
    Fixture(
        name="official-swin",
        build=lambda: OfficialLayout(_swin(OFFICIAL), v2=False),
        input_shape=(1, 3, *OFFICIAL["img_size"]),
        constructor="official layout of " + _constructor("swin_tiny_patch4_window7_224", OFFICIAL),
        meta={"timm_name": "swin_tiny_patch4_window7_224", **_meta(OFFICIAL)},
        noise=NOISE,
        seed=1,
    ),
    Fixture(
        name="official-swinv2",
        build=lambda: OfficialLayout(_swinv2(OFFICIAL_V2), v2=True),
        input_shape=(1, 3, *OFFICIAL_V2["img_size"]),
        constructor="official layout of " + _constructor("swinv2_tiny_window8_256", OFFICIAL_V2),
        meta={"timm_name": "swinv2_tiny_window8_256", **_meta(OFFICIAL_V2)},
        noise=NOISE,
        seed=1,
    ),
]
