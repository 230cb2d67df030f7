"""The tag vocabulary: every word a registration may put in ``tags=``, with what it means.

Tags are for people (``vitzoo list`` shows them) and for the conformance suite,
which reads a few of them to choose or skip checks. They are a declared vocabulary -- not free
text -- so a typo (``tags={"feature-map"}``) is a :class:`~vitzoo.registry.RegistrationError`
naming the plugin, the tag and the known tags, instead of a check that silently never runs.

Capabilities (``needs=`` / ``offers=``, :mod:`vitzoo.capabilities`) are a separate, smaller
vocabulary the spec layer reasons with. A few tags double as capabilities for plugins that
declare none (``image``, ``video``, ``tokens``, ``feature-maps``, ``drops-tokens``, ``mask``:
see :func:`vitzoo.capabilities.needs_of`).

A plugin that needs a new tag adds it here, with its meaning, in the same change.
"""

from __future__ import annotations

from typing import Any

from vitzoo.suggest import check_declared_words

#: Every known tag -> one line saying what it means.
TAGS: dict[str, str] = {
    # -- what the part works on (also read as capabilities when none are declared) --------------
    "image": "works on images (B, C, H, W); an architecture: takes image input",
    "video": "works on videos or volumes (B, C, T, H, W)",
    "tokens": "architecture exposes a flat token sequence (embed / encode), as MIM needs",
    "feature-maps": "architecture returns hierarchical (B, C, H, W) feature maps per stage",
    "drops-tokens": "architecture drops or merges tokens inside the encoder",
    "mask": "accepts a (B, N) key-padding token mask (the suite checks masked keys are ignored)",
    # -- read by the conformance suite ------------------------------------------------------
    "distillation": "has a distillation token / head: training output is a (cls, dist) pair",
    "batch-coupled": "samples of a batch legitimately interact (batch-independence is skipped)",
    "no-compile": "cannot be traced by torch.compile (the compile check is skipped)",
    # -- descriptive ------------------------------------------------------------------------
    "sdpa": "attention computed by torch's scaled_dot_product_attention fast path",
    "linear-complexity": "attention cost grows linearly with the number of tokens",
    "fixed-length": "needs a fixed sequence length, set at build time",
    "needs-matrix": "mixes attention weights after the softmax, so needs the full matrix",
    "conv": "built on convolutions",
    # -- objectives and presets -------------------------------------------------------------
    "supervised": "objective trained from labels",
    "self-supervised": "objective trained without labels",
    "masked-image": "objective reconstructs or predicts masked patches",
    "needs-mask": "objective draws a patch mask and needs a model that can apply one",
    "ema": "objective keeps an exponential-moving-average teacher",
    "teacher": "objective distils from a teacher model",
    "objective": "preset whose spec carries an objective section (a training recipe)",
}

KNOWN_TAGS: frozenset[str] = frozenset(TAGS)


def check_tags(tags: Any, *, where: str) -> frozenset[str]:
    """Validate a ``tags=`` declaration (a word or an iterable of words) against :data:`TAGS`.

    ``where`` names the registration (``plugin 'x' registering attention 'y'``) for the error.
    """
    return check_declared_words(
        tags, KNOWN_TAGS, noun="tag", where=where, reference="their meanings: vitzoo.tags.TAGS"
    )
