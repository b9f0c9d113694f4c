"""Reading a Prometheus text endpoint and the health endpoints, for tests and the bench."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str, timeout: float = 5) -> dict[str, float]:
    """Every sample of the endpoint: {'name{label="value",...}': value}, labels sorted."""
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        text = answer.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def status(url: str, timeout: float = 5) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of a health endpoint."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
