"""Shared fixtures: a tiny seeded CLIP, free loopback ports, quiet Jina."""
import os

import pytest

from crossmodal.settings import JINA_QUIET
from tests.harness import free_port

for _key, _value in JINA_QUIET.items():
    os.environ.setdefault(_key, _value)
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never download weights, even where the hub is reachable


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


