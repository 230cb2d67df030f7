"""Weight converter: the official CCT release (SHI-Labs/Compact-Transformers) into vitzoo ``cct``.

Data only. The official model is ``tokenizer`` (``conv_layers.N`` = Sequential(conv, ReLU,
max-pool)) + ``classifier`` (``positional_emb``, ``blocks.N`` with ``pre_norm``,
``self_attn.qkv`` / ``self_attn.proj``, ``norm1``, ``linear1`` / ``linear2``; ``norm``;
``attention_pool``; ``fc``). vitzoo's tokenizer is one flat Sequential, three modules per conv
layer, so conv layer N is ``patch.layers.{3N}``. The official sequence-pooling score Linear has
a bias; vitzoo's has none because a constant added to every token's score cancels in the
softmax over tokens, so that bias never changes an output (declared unused, not dropped
silently). Checkpoints with the fixed sine table (``*_sine``) carry it as ``positional_emb``
too; loaded into a learned table it computes the same function.
"""

from __future__ import annotations

from vitzoo.weights import Rename, Unused, WeightConverter

#: Tokenizer conv layers covered (the official models use 1 or 2).
_MAX_CONV_LAYERS = 8
_BLOCK = r"classifier\.blocks\.(\d+)\."

OFFICIAL_CCT = WeightConverter(
    name="official-cct",
    source="official",
    architectures=("cct",),
    rules=(
        *(
            Rename(rf"tokenizer\.conv_layers\.{n}\.0\.weight", f"patch.layers.{3 * n}.weight")
            for n in range(_MAX_CONV_LAYERS)
        ),
        Rename(r"classifier\.positional_emb", r"posenc.pos_embed"),
        Rename(r"classifier\.class_emb", r"cls_token"),
        Rename(_BLOCK + r"(pre_norm|norm1)\.(weight|bias)", r"blocks.\1.\2.\3"),
        Rename(_BLOCK + r"self_attn\.(qkv|proj)\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
        Rename(_BLOCK + r"linear1\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
        Rename(_BLOCK + r"linear2\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
        Rename(r"classifier\.norm\.(weight|bias)", r"norm.\1"),
        Rename(r"classifier\.attention_pool\.weight", r"pool.score.weight"),
        Unused(
            r"classifier\.attention_pool\.bias",
            "a constant added to every token's pooling score cancels in the softmax over tokens",
        ),
        Rename(r"classifier\.fc\.(weight|bias)", r"head.fc.\1"),
    ),
    config_names=("cct_",),
    summary="official SHI-Labs CCT checkpoints (tokenizer + classifier layout)",
    verified_by="tests/test_weights_timm.py",
)

CONVERTERS = (OFFICIAL_CCT,)
