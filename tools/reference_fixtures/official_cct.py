"""Fixture: CCT in the official SHI-Labs/Compact-Transformers layout.

The official code (src/cct.py, src/utils/tokenizer.py, src/utils/transformers.py) is not on
PyPI. vit-pytorch's ``vit_pytorch.cct`` is a port of it with the same module tree, so the same
state-dict keys (``tokenizer.conv_layers.N.0.weight``, ``classifier.positional_emb``,
``classifier.blocks.N.{pre_norm,self_attn.qkv,self_attn.proj,linear1,norm1,linear2}``,
``classifier.norm``, ``classifier.attention_pool``, ``classifier.fc``) and the same forward
(pre-norm attention, norm1 on the residual stream, MLP residual, final LayerNorm, sequence
pooling with a biased score layer, fc). The fixture is built with it, as the official
``cct_7_3x1_32`` / ``cct_14_7x2_224`` constructors call ``CCT(...)``, at a tiny width.
"""

from reference_fixtures import Fixture

#: CCT(...) keyword arguments, as official ``_cct`` passes them (stride/padding from kernel 3).
CCT_3X2 = {
    "img_size": 32,
    "embedding_dim": 16,
    "n_conv_layers": 2,
    "kernel_size": 3,
    "stride": 1,
    "padding": 1,
    "num_layers": 2,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "num_classes": 5,
    "positional_embedding": "learnable",
}


def _cct():
    from vit_pytorch.cct import CCT

    return CCT(**CCT_3X2)


#: Noise scale: at these widths the driver's default (0.05) leaves attention near uniform, so a
#: wrong q/k map would still agree; 0.3 makes every tensor move the output measurably.
NOISE = 0.3

FIXTURES = [
    Fixture(
        name="official-cct",
        build=_cct,
        input_shape=(2, 3, 32, 32),
        library="vit_pytorch",
        constructor="vit_pytorch.cct.CCT("
        + ", ".join(f"{k}={v!r}" for k, v in CCT_3X2.items())
        + ") (official SHI-Labs key layout)",
        meta={"official_name": "cct_2_3x2_32 layout (tiny width)", **CCT_3X2},
        noise=NOISE,
    ),
]
