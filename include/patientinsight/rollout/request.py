"""What a rollout is asked to do: the trigger form's values, checked before anything runs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_REPOSITORY = re.compile(r"^[a-z0-9]+([._/:-][a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_VALUES_FILE = re.compile(r"^[A-Za-z0-9_.-]+\.ya?ml$")


class RolloutError(ValueError):
    """The request cannot be rolled out as given (the same request fails again: no retry)."""


@dataclass(frozen=True)
class RolloutRequest:
    image_repository: str
    image_tag: str
    release: str
    namespace: str
    values_file: str = ""
    extra_values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> str:
        return f"{self.image_repository}:{self.image_tag}"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RolloutRequest:
        """Check the trigger form's values; an API trigger bypasses the form, so check again here."""
        request = cls(
            image_repository=str(params["image_repository"]).strip(),
            image_tag=str(params["image_tag"]).strip(),
            release=str(params["release"]).strip(),
            namespace=str(params["namespace"]).strip(),
            values_file=str(params.get("values_file") or "").strip(),
            extra_values=dict(params.get("extra_values") or {}),
        )
        request.check()
        return request

    def check(self) -> None:
        problems = []
        if not _REPOSITORY.match(self.image_repository):
            problems.append(f"image_repository {self.image_repository!r} is not an image repository")
        if not _TAG.match(self.image_tag):
            problems.append(f"image_tag {self.image_tag!r} is not a valid image tag")
        if self.image_tag == "latest":
            problems.append("image_tag 'latest' is not reproducible: roll out an immutable tag")
        if len(self.release) > 53 or not _DNS_LABEL.match(self.release):
            problems.append(f"release {self.release!r}: lowercase letters, digits and '-', at most 53 characters")
        if len(self.namespace) > 63 or not _DNS_LABEL.match(self.namespace):
            problems.append(f"namespace {self.namespace!r} is not a valid namespace name")
        if self.values_file and not _VALUES_FILE.match(self.values_file):
            problems.append(f"values_file {self.values_file!r}: a values file name inside the chart folder")
        if "image" in self.extra_values:
            problems.append("extra_values must not set 'image': use image_repository and image_tag")
        if problems:
            raise RolloutError("; ".join(problems))
