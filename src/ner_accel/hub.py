"""Whether the Hugging Face Hub can be reached (one quick connect), and whether a name is a local path."""

from __future__ import annotations

import socket
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants


@cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect instead of the libraries' minute of retries; honours HF_HUB_OFFLINE."""
    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def is_local(name: str) -> bool:
    return Path(name).exists()
