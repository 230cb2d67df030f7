"""The capability vocabulary: what a registered part NEEDS from the model around it, and OFFERS.

Free-form ``tags`` describe a registration for people (``vitzoo list``); capabilities are a small
closed vocabulary that every part -- component, architecture and objective alike -- declares at
registration, and that one checker reads: :func:`unmet` says which needs a host's offers leave
open. The whole-spec rules (:mod:`vitzoo.rules`), the objective builder and the conformance suite
all ask it, so a spec combining parts that cannot work together is refused at resolution with a
sentence naming the part, instead of crashing inside torch::

    register("window", build, WindowAttentionConfig, needs={"grid-2d", "no-prefix-tokens"})
    register("mae", MaeObjective, MaeConfig, needs={"image", "tokens", "fixed-grid"})

Both keywords default to "derived from the tags" (:func:`needs_of`, :func:`offers_of`), so a
third-party plugin that declares nothing keeps working and is simply checked less.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from vitzoo.suggest import check_declared_words


class Capability(StrEnum):
    """One word of the vocabulary (a ``str``, so plugins may pass plain strings)."""

    #: The input is an image (B, C, H, W) / the part only works on images.
    IMAGE = "image"
    #: The input is a video or volume (B, C, T, H, W) / the part only works on those.
    VIDEO = "video"
    #: The tokens form a 2-D (h, w) grid the part folds back into a map (windows, convs).
    GRID_2D = "grid-2d"
    #: The part needs every grid token, in order: no patch dropout, no token merging.
    FIXED_GRID = "fixed-grid"
    #: The part cannot handle class / distillation / register tokens in the sequence.
    NO_PREFIX_TOKENS = "no-prefix-tokens"
    #: The part needs the model's class token (class-token pooling).
    CLASS_TOKEN = "class-token"
    #: Attention / block: accepts a key-padding token mask. Architecture: passes one to its
    #: blocks, so it NEEDS parts that offer it.
    TOKEN_MASK = "token-mask"
    #: Attention / block: accepts a full (query x key) boolean mask -- the block-diagonal mask of
    #: a packed batch, where several images share one sequence (``packing: greedy``).
    BLOCK_MASK = "block-mask"
    #: The model exposes a flat token sequence with ``embed`` / ``encode`` (masked-image
    #: objectives need it).
    TOKENS = "tokens"
    #: The model returns hierarchical (B, C, H, W) feature maps.
    FEATURE_MAPS = "feature-maps"
    #: ``forward_features`` gives one feature per patch or map location (implied by ``tokens``
    #: and ``feature-maps``); region-level objectives (EsViT) need it.
    SPATIAL_FEATURES = "spatial-features"
    #: The encoder drops or merges tokens (the token grid changes inside the model). Offered by
    #: an objective: it runs the model's blocks on a subset of the patch tokens (MAE).
    DROPS_TOKENS = "drops-tokens"
    #: Pooling gives one vector per image (B, D); a head needs that.
    POOLED_VECTOR = "pooled-vector"
    #: Pooling gives the class and distillation tokens (B, 2, D); a distillation head needs it.
    POOLED_PAIR = "pooled-pair"
    #: Architecture: takes a list of images of different sizes (native resolution, packed into
    #: shared sequences); ``data.max_patches`` needs it.
    PACKED_IMAGES = "packed-images"


VOCABULARY: frozenset[str] = frozenset(c.value for c in Capability)

#: Words a part may NEED and what an architecture must OFFER (or its config must allow) for it.
CONTEXT_WORDS = frozenset({"image", "video", "grid-2d"})
#: What a host model offers its parts and objectives, checked by :func:`unmet`.
HOST_WORDS = frozenset({*CONTEXT_WORDS, "tokens", "feature-maps", "spatial-features"})

#: How each word reads in a sentence ("objective 'mae' needs ...").
PHRASES = {
    "image": "image input (B, C, H, W)",
    "video": "video input (B, C, T, H, W)",
    "grid-2d": "a 2-D (h, w) token grid",
    "tokens": "a model with capability tokens (a flat token sequence with embed / encode)",
    "feature-maps": "a model with capability feature-maps ((B, C, H, W) stage outputs)",
    "spatial-features": (
        "a model with capability spatial-features (one feature per patch or map location)"
    ),
    "fixed-grid": "every patch token of the grid in order",
}


def normalise(words: Any, *, where: str) -> frozenset[str]:
    """Validate a ``needs=`` / ``offers=`` declaration (a word or an iterable of words)."""
    return check_declared_words(
        words,
        VOCABULARY,
        noun="capability",
        where=where,
        reference="their meanings: vitzoo.capabilities.Capability",
    )


def _derived(tags: Iterable[str], kind: str, direction: str) -> frozenset[str]:
    """Sensible defaults from the older free-form tags, for plugins that declare nothing."""
    tags = set(tags)
    out: set[str] = set()
    if kind == "architecture":
        if direction == "offers":
            out |= tags & {"image", "video", "tokens", "feature-maps", "drops-tokens"}
            if "image" in tags:
                out.add("grid-2d")
        return frozenset(out)
    if kind in ("attention", "block") and direction == "offers" and "mask" in tags:
        out.add("token-mask")
    if direction == "needs" and kind != "objective":
        out |= tags & {"image", "video"}
    return frozenset(out)


def needs_of(entry: Any) -> frozenset[str]:
    declared = getattr(entry, "needs", None)
    return frozenset(declared) if declared else _derived(entry.tags, entry.kind, "needs")


def offers_of(entry: Any) -> frozenset[str]:
    """What a registered part offers; ``tokens`` and ``feature-maps`` imply spatial features."""
    declared = getattr(entry, "offers", None)
    words = frozenset(declared) if declared else _derived(entry.tags, entry.kind, "offers")
    if words & {"tokens", "feature-maps"}:
        words |= {"spatial-features"}
    return words


def offers_of_model(model: Any, registry: Any) -> frozenset[str] | None:
    """What a built model offers: its architecture's registered offers (plus ``drops-tokens``
    under patch dropout), read through the spec it was built from; ``None`` for a model built
    without a vitzoo spec, which declares nothing."""
    spec = getattr(model, "vitzoo_spec", None)
    if spec is None or ("architecture", spec.model.type) not in registry:
        return None
    offers = offers_of(registry.get("architecture", spec.model.type))
    if getattr(spec.model, "patch_dropout", 0) > 0:
        offers |= {"drops-tokens"}
    return offers


def unmet(needs: frozenset[str], offers: frozenset[str]) -> list[str]:
    """The words of ``needs`` that a host offering ``offers`` leaves open, sorted.

    The one capability checker: host words (:data:`HOST_WORDS`) must be offered, and
    ``fixed-grid`` is open when the host drops or merges tokens. A host that declares neither
    image nor video input declared nothing about itself (an older third-party plugin) and is
    trusted. Words that depend on a part's place in a spec (prefix tokens, pooled shapes) are
    the whole-spec rules' business (:mod:`vitzoo.rules`).
    """
    declared = bool(offers & {"image", "video"})
    open_words = [w for w in needs & HOST_WORDS if declared and w not in offers]
    if "fixed-grid" in needs and "drops-tokens" in offers:
        open_words.append("fixed-grid")
    return sorted(open_words)


def phrase(word: str) -> str:
    return PHRASES.get(word, word)
