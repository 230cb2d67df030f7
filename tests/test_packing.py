"""Sequence packing (vitzoo.components.packing) and the packed path of the native-resolution ViT.

The two promises of a packed batch: each image's output is what the image alone gives (packing is
exact), and no image sees another (the mask blocks every cross-image attention: perturbing one
image leaves the others' outputs exactly where they were).
"""

from __future__ import annotations

import pytest
import torch
from weights_helpers import perturb_every_tensor

import vitzoo
from vitzoo.components.packing import (
    ImageList,
    PackedLayout,
    kept_tokens,
    pad_tokens,
    pool_per_image,
)
from vitzoo.components.pooling import MeanPool

#: Image sizes of a mixed batch (multiples of the tiny model's patch, 8): tall, wide, square, small.
SIZES = [(32, 16), (16, 40), (32, 32), (8, 8), (24, 16)]


def tiny_navit(**overrides) -> torch.nn.Module:
    """A tiny NaViT (48 px tables, patch 8, width 32), every tensor perturbed, in eval mode."""
    patch = {
        "type": "flat-linear",
        "patch_size": 8,
        "order": "chw",
        "pre_norm": "layernorm-nobias",
        "norm": "layernorm-nobias",
    }
    model = vitzoo.build(
        {
            "model": {
                "type": "navit",
                "image_size": 48,
                "dim": 32,
                "depth": 2,
                "num_heads": 2,
                "num_classes": 7,
                "patch": patch,
                **overrides,
            }
        }
    )
    perturb_every_tensor(model, seed=3)
    return model.eval()


def images(sizes=SIZES, seed: int = 0, dtype=torch.float32) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(3, h, w, generator=gen, dtype=dtype) for h, w in sizes]


# -- the layout ----------------------------------------------------------------------------------
def test_greedy_layout_fills_rows_first_fit_decreasing() -> None:
    layout = PackedLayout.greedy([5, 3, 2, 4, 1], capacity=6)
    assert layout.row_length == 6 and layout.num_rows == 3
    ids = layout.image_ids()
    assert ids.tolist() == [[0, 0, 0, 0, 0, 4], [3, 3, 3, 3, 2, 2], [1, 1, 1, -1, -1, -1]]
    assert layout.padding == 3 and layout.needs_mask
    # an image longer than the capacity widens the rows instead of failing
    assert PackedLayout.greedy([9, 2], capacity=4).row_length == 9
    # one image per row, no padding: attention needs no mask
    assert not PackedLayout.greedy([4, 4]).needs_mask
    padded = PackedLayout.padded([5, 3, 2])
    assert (padded.num_rows, padded.row_length, padded.padding) == (3, 5, 5)


def test_pack_and_unpack_are_inverse_and_the_mask_is_block_diagonal() -> None:
    layout = PackedLayout.greedy([5, 3, 2, 4, 1], capacity=7)
    sequences = [torch.randn(n, 4) for n in layout.lengths]
    rows = layout.pack(sequences)
    assert rows.shape == (layout.num_rows, 7, 4)
    for a, b in zip(sequences, layout.unpack(rows), strict=True):
        assert torch.equal(a, b)
    mask = layout.attention_mask()
    ids = layout.image_ids()
    for r in range(layout.num_rows):
        for q in range(7):
            for k in range(7):
                assert bool(mask[r, q, k]) == bool(ids[r, q] == ids[r, k])
    with pytest.raises(ValueError, match="tokens given"):
        layout.pack(sequences[:-1])


def test_per_image_pooling_never_sees_padding() -> None:
    sequences = [torch.randn(n, 6) for n in (4, 2, 4, 3)]
    pooled = pool_per_image(MeanPool(), sequences, num_prefix_tokens=1)
    expected = torch.stack([s[1:].mean(0) for s in sequences])
    torch.testing.assert_close(pooled, expected)
    padded, valid = pad_tokens(sequences)
    assert padded.shape == (4, 4, 6) and valid.sum(1).tolist() == [4, 2, 4, 3]


def test_token_dropout_counts() -> None:
    assert kept_tokens(100, 0.0, None) == 100
    assert kept_tokens(100, 0.5, None) == 50
    assert kept_tokens(100, 0.5, 30) == 30
    assert kept_tokens(3, 0.99, None) == 1  # at least one token survives


def test_image_list_answers_like_a_batch() -> None:
    batch = ImageList(images())
    assert batch.shape[0] == len(SIZES)
    assert [len(part) for part in batch.chunk(2)] == [3, 2]
    assert all(isinstance(part, ImageList) for part in batch.chunk(2))
    moved = batch.to(torch.float64)
    assert isinstance(moved, ImageList) and moved[0].dtype == torch.float64


# -- the packed path -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pack_length", "packing"),
    [(None, "greedy"), (48, "greedy"), (200, "greedy"), (None, "padded")],
)
def test_packed_batch_gives_each_image_its_own_output(pack_length, packing) -> None:
    """A batch of five sizes, packed (several images per row, padding) or padded (one image per
    row), gives per image the output of that image run alone on the tensor path -- float64, so
    the bound is tight."""
    model = tiny_navit(pack_length=pack_length, packing=packing).double()
    batch = images(dtype=torch.float64)
    with torch.no_grad():
        packed = model(batch)
        alone = torch.cat([model(image.unsqueeze(0)) for image in batch])
    assert packed.shape == (len(SIZES), 7)
    assert (packed - alone).abs().max().item() < 1e-10


def test_packing_really_shares_rows() -> None:
    model = tiny_navit(pack_length=48)
    with torch.no_grad():
        features = model.forward_features(images())
    layout = features.layout
    assert layout.num_rows < len(SIZES)  # several images share a row
    assert features.rows.shape[:2] == (layout.num_rows, 48)


def test_the_mask_blocks_every_cross_image_attention() -> None:
    """Change one image completely: every other image's logits stay exactly where they were,
    while the changed image's move."""
    model = tiny_navit(pack_length=64).double()
    batch = images(dtype=torch.float64)
    changed = list(batch)
    changed[2] = torch.randn_like(batch[2]) * 3.0
    with torch.no_grad():
        before, after = model(batch), model(changed)
        layout = model.forward_features(batch).layout
    assert layout.rows[2] in [layout.rows[i] for i in (0, 1, 3, 4)], "image 2 shares a row"
    others = [0, 1, 3, 4]
    assert (before[others] - after[others]).abs().max().item() <= 1e-12
    assert (before[2] - after[2]).abs().max().item() > 1e-2


def test_tensor_batch_takes_the_vit_path_and_lists_are_checked() -> None:
    model = tiny_navit()
    x = torch.randn(2, 3, 32, 24)
    with torch.no_grad():
        as_tensor = model(x)
        as_list = model([x[0], x[1]])
    torch.testing.assert_close(as_tensor, as_list, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"image 1 of the batch: expected a \(3, H, W\)"):
        model([x[0], x[1, :2]])
    with pytest.raises(ValueError, match="at least one image"):
        model([])
    with pytest.raises(ValueError, match="one size"):
        model.forward_intermediates([x[0]])


def test_token_dropout_and_budget_in_training() -> None:
    """Training drops tokens per image (rate, then budget), on the packed path and the tensor path;
    evaluation keeps them all."""
    model = tiny_navit(patch_dropout=0.5, token_budget=3).train()
    batch = images()
    features = model.forward_features(batch)
    grids = [(h // 8) * (w // 8) for h, w in SIZES]
    assert list(features.layout.lengths) == [min(max(1, int(n * 0.5)), 3) for n in grids]
    tokens = model.forward_features(torch.randn(2, 3, 32, 32))
    assert tokens.shape[1] == 3
    model.eval()
    assert list(model.forward_features(batch).layout.lengths) == grids
    # training step: gradients reach the parameters through the packed path
    model.train()
    model(batch).sum().backward()
    assert model.patch.proj.weight.grad is not None


def test_factorized_positions_refuse_a_grid_beyond_their_tables() -> None:
    model = tiny_navit()
    with pytest.raises(vitzoo.errors.InputSizeError, match="exceeds the factorized position"):
        model([torch.randn(3, 8, 64)])
    assert model.native_resolution.max_grid == (6, 6)
    assert model.native_resolution.patch_size == (8, 8)


def test_packed_path_exports_specialised_to_one_batch_composition() -> None:
    """The declared limit of the packed path under torch.export: the greedy layout is Python, so
    the program holds this batch's layout as constants -- it gives the eager outputs for these
    sizes and its guards refuse other sizes (the tensor path exports with a dynamic batch: the
    conformance suite's export checks)."""
    model = tiny_navit(pack_length=64)
    batch = images()
    program = torch.export.export(model, (batch,), strict=False).module()
    with torch.no_grad():
        torch.testing.assert_close(program(batch), model(batch), atol=1e-5, rtol=1e-5)
    with pytest.raises(Exception, match="[Gg]uard"):
        program(images([(16, 16), (32, 8), (8, 8), (8, 16), (16, 24)]))


def test_variable_length_attention_path_gives_the_masked_result(monkeypatch) -> None:
    """On CUDA a packed batch's attention runs torch's variable-length flash kernel, every image
    its own sequence (no mask, no padding computed). No CUDA here: the plumbing -- gathering
    each image's tokens, the sequence boundaries, putting outputs back -- runs with a reference
    kernel (SDPA per sequence) and must give the dense block-diagonal mask's result."""
    import torch.nn.functional as F

    from vitzoo.components import packing
    from vitzoo.components.native_vit import NativeVisionTransformer

    calls = []

    def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None):
        calls.append((cu_q.tolist(), max_q))
        out = torch.empty_like(q)
        for start, end in zip(cu_q[:-1].tolist(), cu_q[1:].tolist(), strict=True):
            heads_first = [t[start:end].transpose(0, 1) for t in (q, k, v)]
            out[start:end] = F.scaled_dot_product_attention(*heads_first, scale=scale).transpose(
                0, 1
            )
        return out

    model = tiny_navit(pack_length=64).double()
    batch = images(dtype=torch.float64)
    with torch.no_grad():
        dense = model(batch)
    monkeypatch.setattr(packing, "_varlen_kernel", lambda: reference_varlen)
    monkeypatch.setattr(packing.PackedMask, "takes_varlen", lambda self, q: True)
    monkeypatch.setattr(
        NativeVisionTransformer,
        "packed_mask",
        lambda self, layout, rows: packing.PackedMask(layout, rows.device),
    )
    with torch.no_grad():
        varlen = model(batch)
    lengths = [(h // 8) * (w // 8) for h, w in SIZES]
    assert calls and calls[0][0] == [0, *torch.tensor(lengths).cumsum(0).tolist()]
    assert len(calls) == 2  # one per block; the pooling's attention takes a key-padding mask
    assert (varlen - dense).abs().max().item() < 1e-12


def test_greedy_packing_needs_parts_that_take_a_block_mask() -> None:
    """An attention that only takes key-padding masks (performer: linear attention) cannot keep
    images apart inside one sequence: refused with greedy packing, accepted padded (one image per
    sequence, a key-padding mask), where it runs and keeps each image to itself."""
    base = {"attention": {"type": "performer"}, "pool": {"type": "mean"}}
    with pytest.raises(vitzoo.SpecError, match="packing 'greedy' packs several images"):
        tiny_navit(**base)
    model = tiny_navit(**base, packing="padded").double()
    batch = images(dtype=torch.float64)
    with torch.no_grad():
        packed = model(batch)
        alone = torch.cat([model(image.unsqueeze(0)) for image in batch])
    assert (packed - alone).abs().max().item() < 1e-10


def test_the_packed_conformance_checks_catch_images_that_see_each_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The suite's packed-images checks (vitzoo.testing.packed_checks, run for every variant
    that offers packed-images) pass on NaViT and fail once its packed rows lose their mask."""
    from vitzoo.components.native_vit import NativeVisionTransformer
    from vitzoo.testing import packed_checks
    from vitzoo.testing.variants import variants

    (navit,) = [v for v in variants(kind="architecture") if v.name == "navit"]
    checks = (packed_checks.check_packed_equals_alone, packed_checks.check_packed_images_stay_apart)
    for check in checks:
        check(navit)
    monkeypatch.setattr(NativeVisionTransformer, "packed_mask", lambda self, layout, rows: None)
    for check in checks:
        with pytest.raises(AssertionError):
            check(navit)
