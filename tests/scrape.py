"""Reading Prometheus metrics in tests: a sample's value by name and labels."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families


def sample(text: str, name: str, **labels: str) -> float:
    """The value of sample `name` with exactly these labels in a scrape; 0 when absent."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return 0.0


def local_metrics() -> str:
    """What this host's processes counted, as /metrics adds it up (without the cluster gauges)."""
    from sdplatform.metrics import process_registry

    return generate_latest(process_registry()).decode()
