from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from PIL import Image

from aivp_batch.records import last_record
from aivp_batch.snapshot import SNAPSHOT_DIR

REPO = Path(__file__).resolve().parents[1]
FAL_SCHEMAS = SNAPSHOT_DIR  # the bundled, prose-free snapshot of fal's documents
EXAMPLE = REPO / "examples" / "short-film"
FAL_TEST_KEY = "fal-test-key-SECRET-1234"  # the fake server's key: never a real one


@pytest.fixture
def film(tmp_path: Path) -> Path:
    """A copy of the example project, without anything rendered."""
    dest = tmp_path / "film"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("video", ".aivp"))
    return dest


@pytest.fixture
def fal():
    """A fake fal server on loopback, serving the bundled schema snapshot."""
    from aivp_batch.testing.fal_server import FakeFal

    with FakeFal(key=FAL_TEST_KEY, latency_s=0.3) as server:
        yield server


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_module(version_base="1.3", config_module="aivp_batch.conf"):
            return compose(config_name="config", overrides=list(overrides))

    return _compose


def journal_records(store: Path) -> list[dict]:
    """Every job record in the store's journal (`<store>/jobs/*.jsonl`: the last whole line each),
    by identity; a file with no whole record yet is left out."""
    found = (last_record(p.read_bytes()) for p in sorted((store / "jobs").glob("*.jsonl")))
    return [r for r in found if r is not None]


def fal_document(endpoint_id: str) -> dict:
    return json.loads((FAL_SCHEMAS / f"{endpoint_id.replace('/', '__')}.json").read_text())


def has_fal_document(endpoint_id: str) -> bool:
    return (FAL_SCHEMAS / f"{endpoint_id.replace('/', '__')}.json").exists()


def write_png(path: Path, size: tuple[int, int], colour: tuple[int, int, int] = (120, 90, 60)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path
