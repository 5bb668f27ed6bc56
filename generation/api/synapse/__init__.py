"""The Synapse wire format: serializers.py reads a body, views.py answers, urls.py routes."""
