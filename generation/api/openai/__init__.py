"""The OpenAI Images format: serializers.py reads bodies, images.py files, views.py answers."""
