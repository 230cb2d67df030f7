"""The ``weights:`` section of a spec: where a model's starting weights come from.

Only pydantic here: :mod:`vitzoo.spec` includes it in every root spec.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class WeightsSection(BaseModel):
    """``weights: hf-hub:google/vit-base-patch16-224`` or ``{source: ..., format: ..., strict: ...}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(
        description="vitzoo/timm checkpoint file, Hugging Face model folder, or hf-hub:ORG/NAME."
    )
    format: Literal["vitzoo", "timm", "official", "hf"] | None = Field(
        default=None, description="Override format detection."
    )
    strict: bool = Field(
        default=True, description="Every tensor used and filled, or an error listing the rest."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"source": data} if isinstance(data, str) else data
