"""Shared fixtures: where the shared recordings are, and a clear skip when they are not."""
import platform
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPIKES = SHARED / "allen-ctdb-spikes"
METADATA = SHARED / "allen-ctdb-metadata"
EVOKED = SHARED / "evoked-spikes"
NWB_FIXTURES = SHARED / "nwb-fixtures"


def pytest_report_header(config):
    import numpy
    import torch

    return [f"rtclassify test header: python {platform.python_version()}, torch {torch.__version__}, "
            f"numpy {numpy.__version__}; shared data {'present' if SHARED.is_dir() else 'ABSENT'} at {SHARED}"]


def need(path: Path) -> Path:
    """Skip the test with the reason when a shared-data folder is missing."""
    if not path.exists():
        pytest.skip(f"needs {path} (the shared recordings, see ../shared/data/README.md); not present here")
    return path


@pytest.fixture
def spikes_dir() -> Path:
    return need(SPIKES)


@pytest.fixture
def metadata_dir() -> Path:
    return need(METADATA)


@pytest.fixture
def evoked_dir() -> Path:
    return need(EVOKED)
