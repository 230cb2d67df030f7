"""Fixture: timm's SigLIP 2 NaFlex tower (``naflexvit_base_patch16_siglip``) in NaFlex mode.

timm's ``NaFlexVit`` takes a NaFlex batch -- each image's patches flattened (row, column,
channel), their (y, x) coordinates and a validity mask, padded to one length -- and resizes its
position table per image from the coordinates. A fixture's input is one tensor, so the fixture
model is ``NaFlexVit`` whose forward crops image ``i`` of the ``(4, C, 28, 24)`` input to
``SIZES[i]``, patchifies it with timm's own ``batch_patchify`` and builds that batch, as timm's
NaFlex collator does; the model and its state dict are timm's own. The sizes give patch grids
of 4 x 4 (the table's own grid: no resize), 2 x 6, 7 x 3 and 1 x 2.
"""

from reference_fixtures import Fixture

#: timm.create_model(...) keyword arguments: a tiny tower with a 4 x 4 table of 4-px patches.
NAFLEX_TINY = {
    "patch_size": 4,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "pos_embed_grid_size": (4, 4),
    "num_classes": 0,
}
SIZES = [(16, 16), (8, 24), (28, 12), (4, 8)]


def _naflex():
    import timm
    import torch
    from timm.models.naflexvit import NaFlexVit, batch_patchify

    class NaFlexOnCrops(NaFlexVit):
        """NaFlexVit whose input tensor carries the images: image i is ``x[i, :, :h_i, :w_i]``."""

        def forward(self, x):  # type: ignore[override]
            patches, coords = [], []
            for i, (h, w) in enumerate(SIZES):
                flat, (gh, gw) = batch_patchify(x[i : i + 1, :, :h, :w], (4, 4), pad=False)
                ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
                patches.append(flat[0])
                coords.append(torch.stack([ys.flatten(), xs.flatten()], dim=-1))
            longest = max(p.shape[0] for p in patches)
            batch = {
                "patches": torch.stack(
                    [torch.nn.functional.pad(p, (0, 0, 0, longest - len(p))) for p in patches]
                ),
                "patch_coord": torch.stack(
                    [torch.nn.functional.pad(c, (0, 0, 0, longest - len(c))) for c in coords]
                ),
                "patch_valid": torch.stack([torch.arange(longest) < len(p) for p in patches]),
            }
            return super().forward(batch)

    model = timm.create_model("naflexvit_base_patch16_siglip", pretrained=False, **NAFLEX_TINY)
    model.__class__ = NaFlexOnCrops
    return model


#: Large enough that a wrong attention, norm or position resize moves the output far beyond
#: the tolerance at this width.
NOISE = 0.3

FIXTURES = [
    Fixture(
        name="timm-naflex-siglip",
        build=_naflex,
        input_shape=(len(SIZES), 3, 28, 24),
        library="timm",
        constructor="timm.create_model('naflexvit_base_patch16_siglip', "
        + ", ".join(f"{k}={v!r}" for k, v in NAFLEX_TINY.items())
        + f") in NaFlex mode on images of sizes {SIZES} (cropped from the input)",
        meta={"timm": NAFLEX_TINY, "sizes": SIZES},
        noise=NOISE,
    ),
]
