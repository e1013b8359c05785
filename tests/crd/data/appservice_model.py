"""The AppService sample as Python types: a pydantic model (AppService) and a dataclass (AppServiceSpecDC)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import annotated_types as at
from pydantic import BaseModel, Field

from k8sx.crd.markers import ListType, XValidation


class Port(BaseModel):
    """A port the service exposes."""

    name: Annotated[str, Field(min_length=1, max_length=15, pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$")]
    containerPort: Annotated[int, Field(gt=0, le=65535)]
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"


class AppServiceSpec(BaseModel):
    """Desired state of an AppService."""

    size: Annotated[int, Field(ge=0, le=100, description="Number of pods.")]
    image: Annotated[str, Field(min_length=1, description="Container image.")]
    ports: Annotated[list[Port], ListType("map", "name"), Field(max_length=16)] = []


class AppServiceStatus(BaseModel):
    nodes: list[str] | None = None


class AppService(BaseModel):
    spec: Annotated[AppServiceSpec, XValidation("self.size == 0 || self.image != ''", message="an image is "
                                                "needed to run pods")]
    status: AppServiceStatus | None = None


@dataclass
class AppServiceSpecDC:
    size: Annotated[int, at.Ge(0), at.Le(100)]
    image: Annotated[str, at.MinLen(1)]
    tags: Annotated[list[str], ListType("set")] = field(default_factory=list)
