"""Broken models and configuration: a missing, corrupt or hostile model artifact, an unknown model
name, a taxonomy with a YAML error or a duplicate key: one ``error:`` line naming the culprit, exit
status 1, and the warehouse untouched (checked byte for byte). Artifacts never execute code."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer

from models.registry import SHIPPED_DIR
from pipelines.warehouse import Warehouse

BASELINE = SHIPPED_DIR / "sentiment-baseline"


class _Payload:
    """Pickled, it would create a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def _bad_models(root: Path) -> dict[str, tuple[Path, str]]:
    """name → (model folder, what the error line must name)."""
    out = {}
    corrupt = root / "corrupt"
    shutil.copytree(BASELINE, corrupt)
    (corrupt / "weights.npz").write_bytes(b"PK\x03\x04 truncated")
    out["corrupt weights"] = (corrupt, str(corrupt))
    missing = root / "missing"
    shutil.copytree(BASELINE, missing)
    (missing / "weights.npz").unlink()
    out["missing weights"] = (missing, "weights.npz")
    bad_json = root / "bad_json"
    shutil.copytree(BASELINE, bad_json)
    (bad_json / "model.json").write_text("{not json", encoding="utf-8")
    out["corrupt model.json"] = (bad_json, str(bad_json / "model.json"))
    hostile = root / "hostile"
    shutil.copytree(BASELINE, hostile)
    with np.load(BASELINE / "weights.npz") as z:
        arrays = dict(z)
    arrays["intercept"] = np.array([_Payload(root / "executed")], dtype=object)  # read by every load
    np.savez(hostile / "weights.npz", **arrays)
    out["pickled object in the weights"] = (hostile, str(hostile))
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("config")
    home = root / "home"
    with Warehouse(home / "cx.duckdb").connect():  # an existing warehouse, which nothing may touch
        pass
    return root, home, _bad_models(root)


def _digest(home: Path) -> str:
    return "".join(hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(home.glob("cx.duckdb*")))


def _cxloop(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "CXLOOP_HOME": str(home), "COLUMNS": "250"}, timeout=300)


def _one_error(r: subprocess.CompletedProcess[str], naming: str) -> None:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr[-2000:]
    assert naming in lines[0], lines[0]


@pytest.mark.parametrize("case", ["corrupt weights", "pickled object in the weights"])
def test_a_broken_model_stops_the_run_before_anything_is_written(setup: tuple[Path, Path, dict], case: str) -> None:
    root, home, models = setup
    folder, naming = models[case]
    before = _digest(home)
    _one_error(_cxloop(home, "run", "--model", str(folder)), naming)
    assert _digest(home) == before
    assert not (root / "executed").exists()  # nothing from the artifact ran


@pytest.mark.parametrize("case", ["corrupt weights", "missing weights", "corrupt model.json",
                                  "pickled object in the weights"])
def test_every_broken_artifact_is_one_error_naming_it(setup: tuple[Path, Path, dict], case: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """What the CLI checks before ``run`` and ``enrich`` (``pipelines.cli._check_model``), in-process."""
    from pipelines.cli import _check_model
    from pipelines.config import Settings

    root, home, models = setup
    folder, naming = models[case]
    with pytest.raises(typer.Exit):
        _check_model(Settings.resolve(home), str(folder))
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and naming in lines[0], lines
    assert not (root / "executed").exists()


def test_an_unknown_model_name(setup: tuple[Path, Path, dict]) -> None:
    _, home, _ = setup
    before = _digest(home)
    _one_error(_cxloop(home, "enrich", "--model", "no-such-model"), "unknown model 'no-such-model'")
    assert _digest(home) == before


@pytest.mark.parametrize(("content", "message"), [
    ("topics:\n  a:\n    name: 甲\n    stage: usage\n    team: t\n    keywords: [x]\n  a:\n    name: 乙\n",
     "duplicate key 'a'"),
    ("topics:\n  a: !!python/object/apply:os.system ['touch executed']\n", "not valid YAML"),
])
def test_a_broken_taxonomy(setup: tuple[Path, Path, dict], tmp_path: Path, content: str, message: str) -> None:
    _, home, _ = setup
    f = tmp_path / "taxonomy.yaml"
    f.write_text(content, encoding="utf-8")
    before = _digest(home)
    r = _cxloop(home, "run", "--taxonomy", str(f))
    _one_error(r, message)
    assert str(f) in r.stderr and _digest(home) == before
    assert not (tmp_path / "executed").exists()


@pytest.mark.parametrize(("env", "message"), [
    ({"CXLOOP_DASK_WORKERS": "two"}, "CXLOOP_DASK_WORKERS='two'"),
    ({"CXLOOP_DASK_WORKERS": "2", "CXLOOP_DASK_ADDRESS": "tcp://127.0.0.1:1"}, "not both"),
    ({"CXLOOP_SEGMENTER": "hanlp"}, "CXLOOP_SEGMENTER='hanlp' is not a segmentation engine"),
    ({"CXLOOP_DB_MEMORY": "lots"}, "CXLOOP_DB_MEMORY='lots' is not a memory size"),
])
def test_a_bad_engine_setting(setup: tuple[Path, Path, dict], monkeypatch: pytest.MonkeyPatch, env: dict,
                            message: str) -> None:
    _, home, _ = setup
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = _digest(home)
    _one_error(_cxloop(home, "run"), message)
    assert _digest(home) == before


def test_a_model_checked_before_is_loaded_again_only_when_its_files_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's check before ``run`` remembers a model that loaded (``checked-models.json``): a run
    with nothing new does not spend the load again, and a file damaged since is caught again."""
    import models.registry as registry
    from pipelines.cli import _check_model
    from pipelines.config import Settings

    folder = tmp_path / "model"
    shutil.copytree(BASELINE, folder)
    settings = Settings.resolve(tmp_path / "home")
    loads: list[Path] = []
    real = registry.load_sentiment_model
    monkeypatch.setattr(registry, "load_sentiment_model", lambda path, **kw: loads.append(path) or real(path, **kw))
    _check_model(settings, str(folder))
    _check_model(settings, str(folder))
    assert len(loads) == 1 and (settings.cache_dir / "checked-models.json").is_file()
    monkeypatch.setenv("CXLOOP_CASCADE", "0.8")   # another serving setting: checked again
    _check_model(settings, str(folder))
    assert len(loads) == 2
    monkeypatch.delenv("CXLOOP_CASCADE")
    (folder / "weights.npz").write_bytes(b"PK\x03\x04 truncated")   # damaged after it was checked
    with pytest.raises(typer.Exit):
        _check_model(settings, str(folder))
    assert len(loads) == 3
    assert "error:" in capsys.readouterr().err
