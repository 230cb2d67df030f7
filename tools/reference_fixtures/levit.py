"""Fixture: timm's distilled LeViT (the official code's port) at a tiny width, non-square input."""

from reference_fixtures import Fixture

_KWARGS = {
    "img_size": (48, 64),
    "embed_dim": (16, 24),
    "key_dim": 8,
    "num_heads": (2, 3),
    "depth": (1, 1),
    "num_classes": 5,
}


def _levit():
    import timm

    return timm.create_model("levit_128s", pretrained=False, **_KWARGS)


FIXTURES = [
    Fixture(
        name="timm-levit",
        build=_levit,
        input_shape=(2, 3, 48, 64),
        # LeViT's residual BatchNorms start at gamma 0: small noise would leave the output
        # nearly independent of the input (the comparison would prove little).
        noise=0.2,
        constructor=f"timm.create_model('levit_128s', **{_KWARGS})",
        meta={
            "timm_name": "levit_128s",
            **{k: list(v) if isinstance(v, tuple) else v for k, v in _KWARGS.items()},
        },
    ),
]
