"""``hf-hub:ORG/NAME`` -> a local model folder, through ``huggingface_hub`` (the ``hub`` extra).

With ``HF_HUB_OFFLINE=1`` only the local cache is used; a name missing from it is an error that
says how to fetch it. Nothing here runs unless a source names the hub.
"""

from __future__ import annotations

import os
from pathlib import Path

from vitzoo.errors import WeightsError

#: Files a vitzoo load can use; everything else in a repository is not fetched.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "pytorch_model.bin"]


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_hub(name: str) -> Path:
    """The local folder holding ``name`` (``ORG/NAME`` or ``ORG/NAME@revision``)."""
    repo, _, revision = name.partition("@")
    if repo.count("/") != 1:
        raise WeightsError(
            f"hf-hub:{name}: expected hf-hub:ORG/NAME (e.g. hf-hub:google/vit-base-patch16-224)"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise WeightsError(
            f"hf-hub:{name}: needs huggingface_hub; pip install 'vitzoo[hub]'"
        ) from None
    offline = hub_offline()
    try:
        folder = snapshot_download(
            repo_id=repo,
            revision=revision or None,
            allow_patterns=ALLOW_PATTERNS,
            local_files_only=offline,
            # read at call time: huggingface_hub fixes its default when first imported
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
        )
    except Exception as exc:  # huggingface_hub raises many types (offline, 404, network)
        reason = " ".join(str(exc).split())[:200]
        if offline:
            raise WeightsError(
                f"hf-hub:{name}: not in the local Hugging Face cache and HF_HUB_OFFLINE=1; fetch "
                f"it once with network: `hf download {repo}` (or unset HF_HUB_OFFLINE)"
            ) from None
        raise WeightsError(
            f"hf-hub:{name}: could not download ({type(exc).__name__}: {reason}); with no "
            f"network, fetch it elsewhere and set HF_HUB_OFFLINE=1 to use the cache"
        ) from None
    return Path(folder)
