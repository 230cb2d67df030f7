"""Preprocessing and data: the one home of "what input does this model want".

* :mod:`~vitzoo.data.config` -- :func:`resolve_data_config`: input size, mean/std, crop,
  interpolation and class names of a model, checkpoint or spec (the precedence is documented
  there);
* :mod:`~vitzoo.data.transforms` -- :func:`create_transform`: the callable that turns a PIL image
  (or a clip) into the model's input tensor, for evaluation or with the training augmentation
  (:mod:`~vitzoo.data.augment`);
* :mod:`~vitzoo.data.images` -- reading and checking images and clips;
* :mod:`~vitzoo.data.folders` -- labelled sample folders / CSV tables, the dataset, the
  deterministic epoch sampler and the loader;
* :mod:`~vitzoo.data.native` -- native resolution (``data.max_patches``): each image's own
  aspect ratio under a patch budget, batches of images of different sizes.

The names are timm's where timm has one (``resolve_data_config``, ``create_transform``,
``crop_pct``). Sits beside the public API, below ``vitzoo.training``; importing this package
does not import torch (names load on first use).

Typical use::

    config = vitzoo.data.resolve_data_config(model)   # or a checkpoint path, a spec, a preset
    transform = vitzoo.data.create_transform(config)  # eval: centre crop, resize, normalise
    x = transform(PIL.Image.open("cat.jpg")).unsqueeze(0)
"""

from __future__ import annotations

from vitzoo.lazy import lazy_attributes

_LAZY = {
    "resolve_data_config": "vitzoo.data.config",
    "ResolvedDataConfig": "vitzoo.data.config",
    "create_transform": "vitzoo.data.transforms",
    "Transform": "vitzoo.data.transforms",
    "ModelInput": "vitzoo.data.transforms",
    "DataError": "vitzoo.errors",
    "open_image": "vitzoo.data.images",
    "convert_image": "vitzoo.data.images",
    "read_clip": "vitzoo.data.images",
    "image_error": "vitzoo.data.images",
    "SampleIndex": "vitzoo.data.folders",
    "FolderDataset": "vitzoo.data.folders",
    "EpochBatches": "vitzoo.data.folders",
    "balanced_weights": "vitzoo.data.folders",
    "generator": "vitzoo.data.folders",
    "loader": "vitzoo.data.folders",
    "NativeSizing": "vitzoo.data.native",
    "native_size": "vitzoo.data.native",
}

__all__ = list(_LAZY)


__getattr__ = lazy_attributes(__name__, _LAZY)
