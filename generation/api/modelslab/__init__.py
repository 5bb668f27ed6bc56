"""The ModelsLab wire format: serializers.py (bodies), views.py, urls.py (the families)."""
