import os

import pytest

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets"))


def shared_data(name):
    """The real dataset copies beside the checkout (never committed); skip when absent."""
    if not os.path.isdir(os.path.join(SHARED, name)):
        pytest.skip(f"real {name} files not found in {SHARED}")
    return SHARED
