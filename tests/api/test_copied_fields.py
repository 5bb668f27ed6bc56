"""Request serializers copy their declared fields per body (CopiedFields): the same fields as
DRF's deep copy would give, and each instance's its own."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from rest_framework import serializers

# Imported for their serializer classes: every format's request roots subclass CopiedFields.
import generation.api.a1111.controlnet
import generation.api.a1111.serializers
import generation.api.dan.serializers
import generation.api.hyperbolic.serializers
import generation.api.modelslab.editing
import generation.api.modelslab.serializers
import generation.api.openai.serializers
import generation.api.synapse.serializers  # noqa: F401
from generation.api.base import CopiedFields, copied, holding_fields

FORMATS = ("a1111", "dan", "hyperbolic", "modelslab", "openai", "synapse")


def subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *subclasses(sub)]
    return found


def serializer_classes() -> list[type]:
    return [cls for cls in subclasses(CopiedFields) if cls.__module__.startswith("generation.api")]


def state(field: serializers.Field) -> dict[str, Any]:
    """What a bound field is made of, comparable between two instances of it."""
    found: dict[str, Any] = {}
    for name, value in vars(field).items():
        if name == "_creation_counter":
            continue  # a deep copy counts anew; only class creation reads it, for the order
        if name in ("_args", "_kwargs"):
            found[name] = repr(value)  # a held field compares by identity, its repr by settings
        elif name == "parent":
            found[name] = type(value)
        elif name == "_validators":
            found[name] = [(type(v), getattr(v, "limit_value", None)) for v in value]
        elif isinstance(value, serializers.Field):
            found[name] = (type(value), state(value))
        else:
            found[name] = value
    return found


def test_every_format_has_request_serializers_with_copied_fields() -> None:
    modules = {cls.__module__.split(".")[2] for cls in serializer_classes()}
    assert set(FORMATS) <= modules


@pytest.mark.parametrize("cls", serializer_classes(), ids=lambda cls: cls.__qualname__)
def test_the_fields_are_those_of_a_deep_copy(
    cls: type[CopiedFields], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = cls(data={}).fields
    # The same class with DRF's own field copies (a subclass's get_fields still applies).
    monkeypatch.setattr(CopiedFields, "get_fields", serializers.Serializer.get_fields)
    drf = cls(data={}).fields
    assert list(ours) == list(drf)
    for name in drf:
        assert type(ours[name]) is type(drf[name]), name
        assert ours[name] is not drf[name]
        assert state(ours[name]) == state(drf[name]), name


def test_an_instance_changing_its_field_leaves_the_others_alone() -> None:
    cls = generation.api.modelslab.serializers.Text2ImgSerializer
    first, second = cls(data={}), cls(data={})
    first.fields["prompt"].error_messages["required"] = "changed"
    first.fields["prompt"].validators.append(lambda value: None)
    assert second.fields["prompt"].error_messages["required"] == "The prompt field is required."
    assert len(second.fields["prompt"].validators) < len(first.fields["prompt"].validators)
    declared = cls._declared_fields["prompt"]
    assert declared.error_messages["required"] != "changed"
    assert declared.parent is None and first.fields["prompt"].parent is first


def test_a_field_holding_fields_is_deep_copied_with_its_child_bound_to_the_copy() -> None:
    class Body(CopiedFields):
        names = serializers.ListField(child=serializers.CharField(max_length=5))
        size = serializers.IntegerField(min_value=1, max_value=4)

    assert holding_fields(Body) == {"names"}
    body = Body(data={"names": ["abcdef"], "size": 9}, context={"plan": "mine"})
    names = body.fields["names"]
    assert names is not Body._declared_fields["names"]
    assert names.child is not Body._declared_fields["names"].child
    assert names.child.parent is names and names.child.context == {"plan": "mine"}
    assert not body.is_valid()
    assert body.errors == {
        "names": {0: ["Ensure this field has no more than 5 characters."]},
        "size": ["Ensure this value is less than or equal to 4."],
    }
    assert Body(data={"names": ["abc"], "size": 2}).is_valid()


def test_copied_keeps_a_leaf_fields_settings() -> None:
    field = serializers.ChoiceField(choices=["a", "b"], required=False, default="a")
    twin = copied(field)
    assert twin is not field and type(twin) is type(field)
    assert (twin.choices, twin.required, twin.default) == (field.choices, False, "a")
    assert twin.error_messages == field.error_messages
    assert twin.error_messages is not field.error_messages
    assert copy.deepcopy(field).error_messages == twin.error_messages
