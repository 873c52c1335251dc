"""Building blocks shared by every API model: naming, strictness and cross-field rules.

Every cross-field rule is declared once as a :class:`Rule`. The CRD renderer turns
it into a CEL ``x-kubernetes-validations`` entry, so the API server enforces it, and
:class:`ApiModel` runs the same check in Python, so ``optiloop validate`` and the
operator reject exactly what the server rejects. A test table feeds the same
malformed manifests to both.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError


@dataclass(frozen=True)
class Rule:
    """A cross-field rule, enforced by the API server (``cel``) and in Python (``check``).

    ``field`` is the camelCase name of the field the error is reported on, relative
    to the model that declares the rule; the API server reports it as ``fieldPath``.
    """

    cel: str
    message: str
    check: Callable[[Any], bool]
    field: str | None = None

    def to_crd(self) -> dict[str, str]:
        rendered = {"rule": self.cel, "message": self.message}
        if self.field:
            rendered["fieldPath"] = f".{self.field}"
            rendered["reason"] = "FieldValueInvalid"
        return rendered


RULE_ERROR = "cross_field_rule"


def cel_string(text: str) -> str:
    """``text`` as a single-quoted CEL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _publish_rules(schema: dict[str, Any], model_class: type[BaseModel]) -> None:
    """Put a model's rules into its JSON schema, from where the CRD renderer takes them."""
    rules: tuple[Rule, ...] = getattr(model_class, "cross_field_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_crd() for rule in rules]


class ApiModel(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields refused.

    Subclasses list their cross-field rules in ``cross_field_rules``; they are checked
    after field validation and rendered into the CRD.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        use_attribute_docstrings=True,
        json_schema_extra=_publish_rules,
    )

    cross_field_rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> ApiModel:
        for rule in type(self).cross_field_rules:
            if not rule.check(self):
                raise PydanticCustomError(
                    RULE_ERROR,
                    "{message}",
                    {"message": rule.message, "field": rule.field or ""},
                )
        return self

    def to_manifest(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# Strings are bounded everywhere so that CEL rules stay inside the API server's
# cost budget and no field can carry an unbounded payload into etcd.
ObjectName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    ),
]
"""A DNS-1123 subdomain: the name of a Secret or another namespaced Kubernetes object."""

ColumnName = Annotated[str, Field(min_length=1, max_length=256)]
"""The name of a column in the dataset."""

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a resource quantity cannot be negative")
        return value
    if not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a resource quantity (examples: 500m, 2, 1Gi)")
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    Field(
        json_schema_extra={
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
            "maxLength": 32,
        }
    ),
]
"""A Kubernetes resource quantity such as ``500m``, ``2`` or ``1Gi``."""
