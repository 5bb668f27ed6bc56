"""What Hyperbolic answers for a finished job: its images, base64, with their seeds.

`images_body` builds the answer; the `HyperbolicImages` serializer renders it and is what the
OpenAPI schema names, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from generation import answers
from generation.answers import Answer, Number
from generation.models import Job


class HyperbolicImage(Answer):
    """One image, base64, with the seed it was made with."""

    index = serializers.IntegerField()
    image = serializers.CharField(help_text="The PNG, base64")
    random_seed = serializers.IntegerField()


class HyperbolicImages(Answer):
    """The generated images and how long they took."""

    images = HyperbolicImage(many=True)
    inference_time = Number(help_text="Seconds")


def images_body(job: Job) -> dict[str, Any]:
    """The Hyperbolic body of a finished job, before `HyperbolicImages` renders it."""
    seed = job.params["seed"]
    return {
        "images": [
            {"index": index, "image": image, "random_seed": seed + index}
            for index, image in enumerate(answers.images_base64(job))
        ],
        "inference_time": job.generation_time or 0.0,
    }
