"""Training objectives: the contract between a built model, a loss, and the training loop.

An objective wraps a built vitzoo model and turns a batch into a scalar loss. Objectives are
registered through ``register_objectives`` (``supervised`` by the core itself, the others by the
built-in ``objectives`` plugin or any other) and chosen in a spec under ``objective:``::

    model: {preset: vit-s16}            # or any model spec
    objective: {type: mae, mask_ratio: 0.75}

Contract (what ``vitzoo train`` relies on)
------------------------------------------
* Registration: ``register(name, factory, ConfigClass, tags=..., summary=...)`` where
  ``ConfigClass`` subclasses :class:`ObjectiveConfig` (``type: Literal[name] = name``) and
  ``factory(config, octx) -> Objective`` -- an :class:`Objective` subclass whose constructor
  takes ``(config, octx)`` is such a factory (its docstring's first line is the summary).
  ``octx`` is an :class:`ObjectiveContext`: ``octx.model`` (the built model being trained),
  ``octx.system`` (the plugin system, to build teachers; ``octx.registry`` its registry),
  ``octx.class_weights`` and ``octx.teacher`` (what the caller passed to
  :func:`build_objective`, else ``None``).
* What an objective needs from its model is declared at registration with ``needs=``, in the
  capability vocabulary every part uses (:mod:`vitzoo.capabilities`): ``{"image", "tokens",
  "fixed-grid"}`` for MAE/SimMIM/MPP/MP3 (flat tokens, one output per patch, so no encoder that
  drops or merges tokens), ``{"image", "spatial-features"}`` for EsViT. The one checker
  (:func:`vitzoo.capabilities.unmet`) rejects an incompatible pair when the spec is resolved
  (:mod:`vitzoo.rules`) and again when the objective is built around a model (its
  architecture's declared offers), naming ``objective.type``.
* Flat-token objectives use only ``model.embed(x, patch_transform=None, positions=True)``
  (the two keyword hooks let SimMIM/MPP swap patch embeddings for mask tokens before positions
  are added, and MP3 leave positions out), ``model.encode(tokens, mask=None)``,
  ``model.num_prefix_tokens`` and ``model.patch.grid_for``; every other objective uses only
  ``forward_features`` / ``forward_head(pre_logits=True)``.
* Build: ``objective = build_objective(spec_or_config, model, system=None, class_weights=None,
  teacher=None)``; a spec without ``objective:`` trains with ``supervised``.
* Train step::

      objective.train()
      out = objective(images, targets)        # ObjectiveOutput(loss, metrics)
      out.loss.backward(); optimiser.step(); optimiser.zero_grad()
      objective.after_step()                  # EMA teacher / centre updates (DINO, EsViT)

  ``targets`` are class indices (B,) for supervised/distillation objectives and ignored (may be
  ``None``) for self-supervised ones. Optimise ``objective.trainable_parameters()`` -- never
  ``objective.parameters()`` blindly: it excludes frozen parts (EMA teachers); a distillation
  teacher is not even a submodule, so it never lands in ``objective.state_dict()``.
* ``objective.model`` is the trained model; ``objective.extract_encoder()`` returns it as a
  plain classifier (the model the spec's ``model:`` section describes), ready for
  ``vitzoo.save``. Extra heads (decoders, projectors) live on the objective only.
* ``metrics`` are detached floats-as-tensors with stable names (``"loss"`` always present) for
  logging.

Layout: :mod:`~vitzoo.objectives.base` (the classes above), :mod:`~vitzoo.objectives.context`
(:class:`ObjectiveContext`), :mod:`~vitzoo.objectives.build` (:func:`build_objective`),
:mod:`~vitzoo.objectives.supervised` (the core's objective) and
:mod:`~vitzoo.objectives.masking` (random masking, pixel targets, EMA: maths several objectives
share).
"""

from __future__ import annotations

from vitzoo.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput
from vitzoo.objectives.build import build_objective, check_compatible
from vitzoo.objectives.context import ObjectiveContext

__all__ = [
    "Objective",
    "ObjectiveConfig",
    "ObjectiveContext",
    "ObjectiveOutput",
    "build_objective",
    "check_compatible",
]
