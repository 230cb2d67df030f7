"""Fixtures: CLIP and SigLIP image towers at a tiny width, by their references' own constructors.

* timm's ``vit_base_patch32_clip_224`` (GELU) and ``..._clip_quickgelu_224`` (OpenAI's
  QuickGELU): norm_pre, eps 1e-5, bias-free patch embedding; timm's head has a bias, which the
  perturbation makes non-zero, so the test builds them with a linear head;
* timm's ``vit_base_patch16_siglip_224`` with SigLIP 2's tanh-GELU and So400m's odd MLP ratio
  (MAP head, no class token), and the same MAP head on a model with a class token (timm leaves
  prefix tokens out of the attention pool);
* ``timm-clip-resized`` / ``timm-siglip-resized``: timm's CLIP and SigLIP towers with
  ``dynamic_img_size=True`` at their own size, at a second one, and after ``set_input_size``
  (timm's bicubic, antialiased ``resample_abs_pos_embed``);
* OpenCLIP's ``CLIP`` (OpenAI layout, QuickGELU) and ``CustomTextCLIP`` with a timm SigLIP
  tower, each with its text tower: the state dict is the whole image-text model's, the output
  is ``encode_image`` (the image embedding).
"""

from __future__ import annotations

import contextlib

from torch import nn

from reference_fixtures import Fixture
from reference_fixtures._resized import with_second_size

#: timm kwargs of the tiny towers (the test derives the vitzoo spec from them).
TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2}
#: So400m's MLP ratio (hidden 59 at width 16: not a whole multiple) and the tanh GELU.
SIGLIP = {**TINY, "num_classes": 5, "mlp_ratio": 3.7362, "act_layer": "gelu_tanh"}
#: SigLIP B/16's own MLP (ratio 4) with the release's tanh GELU, for the resampling fixture.
SIGLIP_RESIZED = {**TINY, "num_classes": 5, "act_layer": "gelu_tanh"}
#: Noise scale: at width 16 the default (0.05) leaves attention near uniform; 0.3 makes every
#: tensor (the probe, q / kv of the pool included) move the output measurably.
NOISE = 0.3


def _timm(name: str, **kwargs):
    def build():
        import timm

        return timm.create_model(name, pretrained=False, **kwargs)

    return build


#: The second input size of the resized fixtures (a crop of the input; the test crops alike).
SECOND = (24, 16)


def _set_input_size(model: nn.Module, size: tuple[int, int]) -> nn.Module:
    model.set_input_size(img_size=size)
    return model


def _resized(name: str, **kwargs):
    def build():
        import timm

        model = timm.create_model(name, pretrained=False, dynamic_img_size=True, **kwargs)
        return with_second_size(model, SECOND, _set_input_size)

    return build


def _resized_fixture(fixture: str, name: str, kwargs: dict, **meta: str) -> Fixture:
    """timm's ``name`` with ``dynamic_img_size``: its output at 32 px, at :data:`SECOND` and at
    :data:`SECOND` after ``set_input_size``."""
    return Fixture(
        name=fixture,
        build=_resized(name, **kwargs),
        input_shape=(2, 3, 32, 32),
        constructor=_call(name, {**kwargs, "dynamic_img_size": True})
        + f"; outputs: at 32 px, at {SECOND} (dynamic), at {SECOND} after set_input_size",
        meta={"timm_name": name, **meta, **kwargs, "second_size": list(SECOND)},
        noise=NOISE,
    )


def _call(name: str, kwargs: dict) -> str:
    return (
        f"timm.create_model({name!r}, " + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"
    )


class ImageTower(nn.Module):
    """An OpenCLIP model seen as its image encoder: ``forward`` is ``encode_image``; the state
    dict is the whole model's (its text tower too), with OpenCLIP's own key names."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.encode_image(x)

    def state_dict(self, *args, **kwargs):
        return self.model.state_dict(*args, **kwargs)


#: OpenCLIP sizes: a 2-layer width-16 tower (head width 8: 2 heads), 8-d embedding, tiny text.
OPENCLIP_VISION = {"layers": 2, "width": 16, "head_width": 8, "patch_size": 8, "image_size": 32}
OPENCLIP_TEXT = {"context_length": 8, "vocab_size": 50, "width": 16, "heads": 2, "layers": 1}


def _openclip() -> nn.Module:
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    model = CLIP(
        embed_dim=8,
        vision_cfg=CLIPVisionCfg(**OPENCLIP_VISION),
        text_cfg=CLIPTextCfg(**OPENCLIP_TEXT),
        quick_gelu=True,
    )
    return ImageTower(model)


@contextlib.contextmanager
def _tiny_timm_towers(**tiny):
    """OpenCLIP builds its timm tower from a model name alone: shrink it where it is created."""
    import timm

    original = timm.create_model
    timm.create_model = lambda name, **kw: original(name, **{**kw, **tiny})
    try:
        yield
    finally:
        timm.create_model = original


def _openclip_siglip() -> nn.Module:
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP

    vision = CLIPVisionCfg(
        image_size=32,
        timm_model_name="vit_base_patch16_siglip_224",
        timm_model_pretrained=False,
        timm_pool="map",
        timm_proj="none",
    )
    tiny = {k: v for k, v in SIGLIP.items() if k != "num_classes"}
    with _tiny_timm_towers(**tiny):
        model = CustomTextCLIP(
            embed_dim=16,
            vision_cfg=vision,
            text_cfg=CLIPTextCfg(**OPENCLIP_TEXT),
            init_logit_bias=-10,
        )
    return ImageTower(model)


CLIP_TIMM = {**TINY, "num_classes": 8}
MAP_CLS = {**TINY, "num_classes": 5, "class_token": True}

FIXTURES = [
    Fixture(
        name="timm-clip",
        build=_timm("vit_base_patch32_clip_224", **CLIP_TIMM),
        input_shape=(2, 3, 32, 32),
        constructor=_call("vit_base_patch32_clip_224", CLIP_TIMM),
        meta={"timm_name": "vit_base_patch32_clip_224", "activation": "gelu", **CLIP_TIMM},
        noise=NOISE,
    ),
    Fixture(
        name="timm-clip-quickgelu",
        build=_timm("vit_base_patch32_clip_quickgelu_224", **CLIP_TIMM),
        input_shape=(2, 3, 32, 32),
        constructor=_call("vit_base_patch32_clip_quickgelu_224", CLIP_TIMM),
        meta={
            "timm_name": "vit_base_patch32_clip_quickgelu_224",
            "activation": "quick-gelu",
            **CLIP_TIMM,
        },
        noise=NOISE,
    ),
    _resized_fixture(
        "timm-clip-resized", "vit_base_patch32_clip_224", CLIP_TIMM, activation="gelu"
    ),
    _resized_fixture("timm-siglip-resized", "vit_base_patch16_siglip_224", SIGLIP_RESIZED),
    Fixture(
        name="timm-siglip",
        build=_timm("vit_base_patch16_siglip_224", **SIGLIP),
        input_shape=(2, 3, 32, 32),
        constructor=_call("vit_base_patch16_siglip_224", SIGLIP),
        meta={"timm_name": "vit_base_patch16_siglip_224", **SIGLIP, "hidden_dim": 59},
        noise=NOISE,
    ),
    Fixture(
        name="timm-vit-map-cls",
        build=_timm("vit_base_patch16_siglip_224", **MAP_CLS),
        input_shape=(2, 3, 32, 32),
        constructor=_call("vit_base_patch16_siglip_224", MAP_CLS),
        meta={"timm_name": "vit_base_patch16_siglip_224", **MAP_CLS},
        noise=NOISE,
    ),
    Fixture(
        name="openclip-clip",
        build=_openclip,
        input_shape=(2, 3, 32, 32),
        library="open_clip",
        constructor=f"open_clip.model.CLIP(embed_dim=8, vision_cfg=CLIPVisionCfg(**{OPENCLIP_VISION}), "
        f"text_cfg=CLIPTextCfg(**{OPENCLIP_TEXT}), quick_gelu=True); output: encode_image",
        meta={**OPENCLIP_VISION, "embed_dim": 8, "activation": "quick-gelu"},
        noise=NOISE,
    ),
    Fixture(
        name="openclip-siglip",
        build=_openclip_siglip,
        input_shape=(2, 3, 32, 32),
        library="open_clip",
        constructor="open_clip.model.CustomTextCLIP(embed_dim=16, vision_cfg=CLIPVisionCfg("
        "timm_model_name='vit_base_patch16_siglip_224', timm_pool='map', timm_proj='none', "
        f"image_size=32), text_cfg=CLIPTextCfg(**{OPENCLIP_TEXT})), its timm tower created with "
        f"{ {k: v for k, v in SIGLIP.items() if k != 'num_classes'} }; output: encode_image",
        meta={**SIGLIP, "num_classes": 0, "hidden_dim": 59},
        noise=NOISE,
    ),
]
