"""What Synapse answers: one base64 PNG, or a JSON array of names.

Each serializer renders its view's answer and is what the OpenAPI schema names for it.
"""

from __future__ import annotations

from rest_framework import serializers

from generation.answers import Answer


class SynapseImage(Answer):
    """POST /sd/<model>'s answer: the one image."""

    # The wire name; DRF takes declared fields off the class, so `.data` still renders.
    # The wire field `data`: DRF's metaclass moves declared fields off the class, so the
    # serializer's `.data` property stays; mypy sees only the name clash.
    data = serializers.CharField(help_text="The PNG, base64")  # type: ignore[assignment]


class Names(serializers.ListSerializer):
    """A JSON array of names (checkpoints, samplers, LoRAs or embeddings), sorted."""

    child = serializers.CharField()
