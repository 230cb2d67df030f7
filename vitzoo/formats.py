"""The words vitzoo's files and weight sources are described with, each spelled once.

A leaf vocabulary (nothing of vitzoo imported) because every layer reads or writes them: the spec
layer's ``weights:`` section names the formats, checkpoints write the metadata keys, weight
loading detects the formats and reads the keys back, export stores them in ONNX files, and the
command line offers the formats as choices. Spelled in five places, they had started to differ.
"""

from __future__ import annotations

from typing import Literal

#: Where weights can come from (``weights: {format: ...}``, ``--format``): a vitzoo checkpoint
#: (rebuilds itself), a timm or an official release's plain state dict, a Hugging Face folder.
WeightFormat = Literal["vitzoo", "timm", "official", "hf"]
WEIGHT_FORMATS: tuple[str, ...] = ("vitzoo", "timm", "official", "hf")

#: The foreign formats a registered weight converter reads (everything but ``vitzoo``).
SourceKind = Literal["timm", "hf", "official"]
SOURCE_KINDS: tuple[str, ...] = ("timm", "hf", "official")

#: Where ``vitzoo.build(..., weights="hf-hub:ORG/NAME")`` looks: the Hugging Face hub.
HUB_PREFIX = "hf-hub:"

# -- metadata keys of vitzoo safetensors files (and of exported ONNX models) -----------------
#: The model's spec as JSON: what makes a checkpoint rebuild itself.
SPEC_KEY = "vitzoo.spec"
#: The checkpoint layout version and the vitzoo version that wrote it.
FORMAT_KEY = "vitzoo.format"
VERSION_KEY = "vitzoo.version"
#: Class names in index order (JSON list).
CLASSES_KEY = "vitzoo.classes"
#: How inputs must be prepared (JSON: mean, std, interpolation, crop fraction, input size).
PREPROCESSING_KEY = "vitzoo.preprocessing"
#: (C, H, W) or (C, T, H, W) an exported model expects.
INPUT_SIZE_KEY = "vitzoo.input_size"
#: Where pretrained weights came from and which converter read them.
WEIGHTS_SOURCE_KEY = "vitzoo.weights.source"
WEIGHTS_CONVERTER_KEY = "vitzoo.weights.converter"
