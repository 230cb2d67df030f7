"""The house's presets: each cites its paper and declares the reference code's exact parameter
count; the catalogue (root registry.yaml) is where presets and their released names come from.

The counts themselves (exactly, on the meta device) and the stated MACs (within 5%) are checked
by the conformance suite's preset checks (``vitzoo.testing.preset_checks``, run over every
registered preset by tests/test_conformance.py), which third-party presets get too; this file
holds what only the house asks of its own catalogue.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import vitzoo
from vitzoo.plugins import PluginLoadError, load_plugins

PRESETS = vitzoo.get_registry().names("preset")
#: Presets whose paper states multiply-accumulates (``macs:`` in the catalogue): all small.
WITH_MACS = [n for n in PRESETS if vitzoo.get_registry().get("preset", n).expected_macs]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_cites_its_paper_and_declares_the_exact_count(name: str) -> None:
    entry = vitzoo.get_registry().get("preset", name)
    assert entry.citation, f"{name}: cite the paper"
    assert entry.expected_params, f"{name}: give the reference's exact parameter count"


def test_vit_b16_is_86_6m() -> None:
    with torch.device("meta"):
        model = vitzoo.build("vit-b16")
    assert f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M" == "86.6M"


def test_some_presets_state_their_macs() -> None:
    assert len(WITH_MACS) >= 5, WITH_MACS


# -- released names: the catalogue is their one home --------------------------------------------
TINY_SPEC = {"model": {"type": "vit", "image_size": 32, "dim": 32, "depth": 1, "num_heads": 2}}


def released_plugin(**options: object) -> tuple[str, object]:
    @vitzoo.hookimpl
    def register_presets(register):  # noqa: ANN001, ANN202
        register("tiny-released", TINY_SPEC, citation="test", expected_params=1, **options)

    return ("released-test", SimpleNamespace(register_presets=register_presets))


def test_the_catalogue_is_the_root_registry_yaml() -> None:
    """The editable install (the test environment) reads the source tree's root file; the wheel
    ships a copy inside vitzoo_plugins (tests/test_packaging.py)."""
    from vitzoo_plugins._catalogue import CATALOGUE_FILE, catalogue_path

    root = Path(__file__).resolve().parents[1]
    assert Path(str(catalogue_path())) == root / "registry.yaml" == root / CATALOGUE_FILE
    assert not list((root / "plugins").glob("*.yaml")), "one catalogue, at the root"


def test_released_names_are_registered_and_the_timm_ones_are_aliases() -> None:
    registry = vitzoo.get_registry()
    preset = registry.get("preset", "vit-b16")
    assert preset.released_names("timm") == ("vit_base_patch16_224",)
    assert preset.released_names("hf") == ("google/vit-base-patch16-224",)
    assert registry.canonical("preset", "vit_base_patch16_224") == "vit-b16"
    nest = registry.get("preset", "nest-t")
    assert nest.released_names("timm") == ("nest_tiny_jx",)
    assert set(nest.aliases) == {"nest_tiny_jx"}
    # timm's PyTorch-padded nest_tiny shares the tensors but not the function: its own preset
    torch_padded = registry.get("preset", "nest_tiny")
    assert torch_padded.name == "nest-t-torch" and torch_padded.released == ()
    assert torch_padded.spec["model"]["padding"] == "symmetric"
    xcit = registry.get("preset", "xcit-s12")
    assert xcit.released_names("official") == ("xcit_small_12_p16_224",)


def test_released_timm_names_become_aliases_for_a_third_party_too() -> None:
    system = load_plugins(
        entrypoints=False,
        strict=True,
        extra=[released_plugin(released={"timm": "tiny_timm", "hf": ["org/tiny"]})],
    )
    preset = system.registry.get("preset", "tiny_timm")
    assert preset.name == "tiny-released" and preset.aliases == ("tiny_timm",)
    assert [(r.source, r.name) for r in preset.released] == [
        ("timm", "tiny_timm"),
        ("hf", "org/tiny"),
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"released": {"torchvision": ["x"]}}, "keyed by source kind (timm, hf, official)"),
        ({"released": {"hf": [""]}}, "released hf names must be non-empty strings"),
        ({"released": {"hf": 3}}, "released hf names must be non-empty strings"),
        ({"released": {"hf": ["a/b", "a/b"]}}, "a released hf name is listed twice"),
        ({"released": ["timm"]}, "released must map a source kind to names"),
        ({"released": {"timm": ["x_y"]}, "aliases": ["x_y"]}, "list them once, under released"),
        ({"released": {"timm": ["Not-A-Name"]}}, "alias 'Not-A-Name' must be a lowercase name"),
    ],
)
def test_bad_released_names_are_registration_errors(options: dict, message: str) -> None:
    with pytest.raises(PluginLoadError, match=re.escape(message)):
        load_plugins(entrypoints=False, strict=True, extra=[released_plugin(**options)])
