"""The configuration file: defaults, env overrides and clear errors for bad files."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from traceo_finops.config import DEFAULT_CONFIG_PATH, ConfigError, load_config

pytestmark = pytest.mark.unit


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "finops.yaml"
    path.write_text(text)
    return path


def test_default_file_is_valid_and_env_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = load_config(DEFAULT_CONFIG_PATH)
    assert cfg.sources and all(s.conn_id for s in cfg.sources)
    monkeypatch.setenv("FINOPS_CONFIG", str(write(tmp_path, "sources: [{name: a}]\nreport_root: /x/y\n")))
    monkeypatch.setenv("FINOPS_REPORT_ROOT", str(tmp_path / "elsewhere"))
    cfg = load_config()
    assert cfg.sources[0].name == "a"
    assert cfg.report_root_uri == str(tmp_path / "elsewhere")


def test_durations_and_relative_root(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "report_root: rel/dir\ndefault_lookback: 36h\nsources: [{name: a}]\n"
                                      "workflows: {rightsizing: {history: 7d}}\n"))
    assert cfg.default_lookback == timedelta(hours=36)
    assert cfg.workflows.rightsizing.history == timedelta(days=7)
    assert Path(cfg.report_root_uri).is_absolute() and cfg.report_root_uri.endswith("rel/dir")
    assert load_config(write(tmp_path, "report_root: s3://b/p/\nsources: [{name: a}]\n")).report_root_uri == "s3://b/p"


@pytest.mark.parametrize(("text", "key", "problem"), [
    ("sources: [{name: a, flavor: thanos}]", "sources.0.flavor", "'prometheus' or 'mimir'"),
    ("sources: []", "sources", "at least 1"),
    ("sources: [{name: a}]\nworkflows: {cardinality: {lookback: soon}}", "workflows.cardinality.lookback",
     "not a duration"),
    ("sources: [{name: a}]\nsorces: []", "sorces", "Extra inputs are not permitted"),
    ("sources: [{name: a}, {name: a}]", "sources", "unique, repeated: a"),
    ("sources: [{name: a, tenants: [t1]}]", "sources.0", "only meaningful for flavor 'mimir'"),
    ("sources: [{name: a}]\nbuckets: [{name: Bad_Bucket}]", "buckets.0.name", "pattern"),
    ("sources: [{name: a}]\nworkflows: {rightsizing: {cpu_percentile: 1.5}}", "workflows.rightsizing.cpu_percentile",
     "less than or equal to 1"),
])
def test_invalid_file_names_key_and_problem(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and f"  {key}:" in msg and problem in msg


@pytest.mark.parametrize(("text", "problem"), [
    ("sources: [name: a", "not valid YAML"),
    ("- just\n- a list\n", "must be a YAML mapping"),
])
def test_unparsable_file(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_config(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_lookups_name_what_is_missing() -> None:
    cfg = load_config(DEFAULT_CONFIG_PATH)
    with pytest.raises(ConfigError, match="no bucket named 'nope'"):
        cfg.bucket("nope")
    with pytest.raises(ConfigError, match="no source named 'nope'"):
        cfg.source("nope")
