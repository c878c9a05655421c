"""The Hugging Face TGI (LLM inference) container image for a region and TGI version.

The account that hosts the TGI Deep Learning Container differs by region (and partition), so the map
is read from the installed sagemaker SDK's own `image_uri_config/huggingface-llm.json` (the table
`sagemaker.core.image_uris.retrieve("huggingface-llm", ...)` uses) rather than copied into code. The
file is read by path, without importing the SDK (3 s of imports and an AWS region needed)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import metadata
from typing import Any

DEFAULT_TGI_VERSION = "3.3.6"
_CONFIG_FILE = "sagemaker/core/image_uri_config/huggingface-llm.json"
_DISTRIBUTION = "sagemaker-core"


class ImageLookupError(ValueError):
    """The region or TGI version has no TGI image in the SDK's table."""


@lru_cache(maxsize=1)
def _config() -> dict[str, Any]:
    path = metadata.distribution(_DISTRIBUTION).locate_file(_CONFIG_FILE)
    data: dict[str, Any] = json.loads(path.read_text())
    inference: dict[str, Any] = data["inference"]
    return inference


def tgi_versions() -> list[str]:
    """TGI versions the installed SDK knows, plus their short aliases ("3.3" -> "3.3.6")."""
    config = _config()
    return sorted([*config["versions"], *config.get("version_aliases", {})])


def _ecr_hostname(region: str) -> str:
    """ecr.<region>.amazonaws.com, or the partition's suffix (amazonaws.com.cn, ...), as botocore knows it."""
    import botocore.loaders
    import botocore.regions

    resolver = botocore.regions.EndpointResolver(botocore.loaders.create_loader().load_data("endpoints"))
    endpoint = resolver.construct_endpoint("ecr", region)
    if endpoint and endpoint.get("hostname"):
        return str(endpoint["hostname"])
    return f"ecr.{region}.amazonaws.com"


def tgi_image_uri(region: str, version: str = DEFAULT_TGI_VERSION) -> str:
    """The GPU TGI image, e.g. `<account>.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi-inference:
    2.7.0-tgi3.3.6-gpu-py311-cu124-ubuntu22.04`; the same URI the SDK's image_uris.retrieve returns."""
    config = _config()
    full_version = config.get("version_aliases", {}).get(version, version)
    versions = config["versions"]
    if full_version not in versions:
        raise ImageLookupError(f"TGI version {version!r} is not in the SDK's table; known: {', '.join(tgi_versions())}")
    entry = versions[full_version]
    account = entry["registries"].get(region)
    if account is None:
        raise ImageLookupError(
            f"no TGI {full_version} image in region {region!r}; regions: {sorted(entry['registries'])}"
        )
    processor = "gpu"  # the only processor of huggingface-llm (Neuron images have their own table)
    py_version = entry["py_versions"][0]
    tag = f"{entry['tag_prefix']}-{processor}-{py_version}-{entry['container_version'][processor]}"
    return f"{account}.dkr.{_ecr_hostname(region)}/{entry['repository']}:{tag}"
