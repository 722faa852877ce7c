"""Shared fixtures: an isolated CXLOOP_HOME per test, and one Prefect test server per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ["CXLOOP_SALT"] = "test-salt"


@pytest.fixture(scope="session", autouse=True)
def base_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of converted base encoders for the whole session (the conversion takes seconds), and
    of jieba's dictionary and IDF table (every CLI subprocess on a new home would build them again)."""
    cache = tmp_path_factory.mktemp("cxloop-cache")
    os.environ["CXLOOP_CACHE"] = str(cache)
    os.environ["CXLOOP_JIEBA_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory, base_cache: Path) -> Path:
    """A 2-layer, 64-wide BERT with the real e5 tokenizer: fine-tunes and exports in seconds."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from models.e5_base import ensure_base
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-base")
    tok = AutoTokenizer.from_pretrained(ensure_base(base_cache))
    config = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=130, type_vocab_size=1,
                        pad_token_id=tok.pad_token_id)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def prefect_server():
    """A real (temporary) Prefect API for flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty run-time folder used as CXLOOP_HOME."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("CXLOOP_HOME", str(h))
    monkeypatch.delenv("CXLOOP_DB", raising=False)
    monkeypatch.delenv("CXLOOP_TAXONOMY", raising=False)
    return h


@pytest.fixture()
def sample_copy(tmp_path: Path) -> Path:
    """A private copy of the sample data folder."""
    dst = tmp_path / "sample"
    shutil.copytree(SAMPLE, dst)
    return dst
