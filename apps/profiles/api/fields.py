"""Serializer fields of the profile API, with how the OpenAPI schema shows them."""

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent, build_choice_field
from rest_framework import serializers


class NamedChoiceField(serializers.ChoiceField):
    """A choice field documented as an enum component of its own name.

    Other apps' fields of the same name (a device's ``platform``, a CA's ``kind``) keep
    their enum names, and no enum naming collision warns.
    """

    def __init__(self, *, enum_name: str, **kwargs) -> None:
        self.enum_name = enum_name
        super().__init__(**kwargs)


class NamedChoiceFieldExtension(OpenApiSerializerFieldExtension):
    target_class = NamedChoiceField

    def map_serializer_field(self, auto_schema, direction) -> dict:
        choice = build_choice_field(self.target)
        component = ResolvedComponent(
            name=self.target.enum_name,
            type=ResolvedComponent.SCHEMA,
            object=self.target.enum_name,
            schema={key: choice[key] for key in ("enum", "type", "description") if key in choice},
        )
        auto_schema.registry.register_on_missing(component)
        return component.ref


class PayloadReferenceField(serializers.UUIDField):
    """A payload of the same profile, by its uuid."""

    def to_representation(self, value) -> str:
        return super().to_representation(value.uuid)
