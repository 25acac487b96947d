"""docs/configuration.md and docs/connections.md cannot drift from the code they describe.

The configuration reference is checked against the pydantic models (every field documented, no
documented field that does not exist, every default as the model has it); its examples are validated
by the real loaders; the connection examples are parsed by Airflow and by the library's own parsers.
"""

from __future__ import annotations

import json
import re
import typing
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from traceo_finops import config as config_module
from traceo_finops.config import FinopsConfig
from traceo_finops.pricing import load_price_table
from traceo_finops.prometheus.spec import SourceSpec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DOC = ROOT / "docs" / "configuration.md"
CONNECTIONS_DOC = ROOT / "docs" / "connections.md"
REQUIRED = object()
EXPECTED_CONN_TYPES = {"prometheus_default": "http", "aws_default": "aws", "slack_finops": "slackwebhook"}


# -- the model side -----------------------------------------------------------------------------------
def _submodel(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The pydantic model inside an annotation, and whether it sits in a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = typing.get_origin(annotation)
    for arg in typing.get_args(annotation):
        model, in_list = _submodel(arg)
        if model is not None:
            return model, in_list or origin is list
    return None, False


def _field_paths(model: type[BaseModel], prefix: str = "", defaults: BaseModel | None = None):
    """(path, default, is_leaf) for every field, recursively; defaults follow the parent's default instance."""
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if defaults is not None:
            default = getattr(defaults, name)
        elif field.is_required():
            default = REQUIRED
        else:
            default = field.get_default(call_default_factory=True)
        sub, in_list = _submodel(field.annotation)
        if sub is None:
            yield path, default, True
            continue
        yield path, default, False
        if in_list:
            yield from _field_paths(sub, path + "[]")
        else:
            yield from _field_paths(sub, path, default if isinstance(default, BaseModel) else None)


MODEL_PATHS = list(_field_paths(FinopsConfig))


# -- the document side --------------------------------------------------------------------------------
def _section(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def _reference_rows() -> dict[str, list[str]]:
    """First-cell path -> cells, for the table rows of the Reference section."""
    reference = _section(CONFIG_DOC.read_text(encoding="utf-8"), "\n## Reference\n", "\n## Pricing\n")
    rows: dict[str, list[str]] = {}
    for line in reference.splitlines():
        m = re.match(r"^\| `([^`]+)` \|", line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} is documented twice"
            rows[m.group(1)] = [c.strip() for c in line.strip().strip("|").split(" | ")]
    return rows


def _code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _matches_default(cell: str, default: Any) -> bool:
    cell = cell.strip().strip("*")
    if default is REQUIRED:
        return cell == "required"
    m = re.fullmatch(r"`([^`]*)`", cell)
    if not m:
        return False
    text = m.group(1)
    if default is None:
        return text == "null"
    if isinstance(default, timedelta):
        return config_module._parse_duration(text) == default
    if isinstance(default, Enum):
        return text == default.value
    if isinstance(default, bool):
        return yaml.safe_load(text) is default
    if isinstance(default, int | float):
        return float(text) == float(default)
    if isinstance(default, list | dict):
        return yaml.safe_load(text) == default
    return text == str(default)


# -- configuration.md -----------------------------------------------------------------------------------
def test_every_config_field_is_documented():
    rows = _reference_rows()
    missing = [path for path, _, _ in MODEL_PATHS if path not in rows]
    assert not missing, f"docs/configuration.md lacks: {', '.join(missing)}"


def test_no_documented_field_is_gone_from_the_model():
    known = {path for path, _, _ in MODEL_PATHS}
    stale = [path for path in _reference_rows() if path not in known]
    assert not stale, f"docs/configuration.md documents keys the model does not have: {', '.join(stale)}"


def test_documented_defaults_match_the_model():
    rows = _reference_rows()
    wrong = []
    for path, default, is_leaf in MODEL_PATHS:
        if not is_leaf:
            continue
        cells = rows[path]
        assert len(cells) == 5, f"{path}: a row has key, type, default, meaning, example"
        if not _matches_default(cells[2], default):
            wrong.append(f"{path}: doc says {cells[2]}, model default is {default!r}")
    assert not wrong, "\n".join(wrong)


def test_every_leaf_row_has_a_type_meaning_and_example():
    rows = _reference_rows()
    for path, _, is_leaf in MODEL_PATHS:
        _, type_, _, meaning, example = rows[path]
        assert type_ and meaning, path
        if is_leaf:
            assert example, f"{path} has no example"


def test_full_example_is_a_valid_configuration():
    blocks = [b for b in _code_blocks(CONFIG_DOC.read_text(encoding="utf-8"), "yaml") if b.startswith("# full example")]
    assert len(blocks) == 1
    cfg = FinopsConfig.model_validate(yaml.safe_load(blocks[0]))
    # It shows every key: dumping it back (without defaults dropped) yields every documented leaf path.
    data = yaml.safe_load(blocks[0])
    shown = set()

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and not prefix.endswith("overrides"):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else k)
        elif isinstance(node, list) and node and isinstance(node[0], dict):
            for item in node:
                walk(item, prefix + "[]")
        else:
            shown.add(prefix)

    walk(data, "")
    leaves = {path for path, _, is_leaf in MODEL_PATHS if is_leaf}
    assert leaves <= shown, f"the full example omits: {sorted(leaves - shown)}"
    # And its pricing overrides are valid for its price table.
    load_price_table(cfg.pricing.profile, cfg.pricing.overrides)


def test_pricing_paths_in_the_docs_exist_in_the_table():
    text = CONFIG_DOC.read_text(encoding="utf-8")
    table = load_price_table()
    mentioned = set(re.findall(r"`((?:s3|compute|metrics)\.[A-Za-z0-9_.]+)`", text))
    for block in _code_blocks(text, "yaml"):
        overrides = (yaml.safe_load(block) or {}).get("pricing", {}).get("overrides") or {}
        mentioned |= set(overrides)
        load_price_table(overrides=overrides)  # every example override is accepted
    assert mentioned, "no pricing paths found in docs/configuration.md"
    unknown = sorted(p for p in mentioned if p not in table.paths())
    assert not unknown, f"docs/configuration.md names price-table paths that do not exist: {unknown}"


def test_env_overrides_that_the_loader_reads_are_documented():
    text = CONFIG_DOC.read_text(encoding="utf-8")
    source = Path(config_module.__file__).read_text(encoding="utf-8")
    env_vars = set(re.findall(r'os\.environ(?:\.get)?[\[(]"([A-Z_]+)"', source))
    assert {"FINOPS_CONFIG", "FINOPS_REPORT_ROOT"} <= env_vars
    for var in env_vars:
        assert f"`{var}`" in text, f"{var} is read by config.py but not documented"


# -- connections.md ---------------------------------------------------------------------------------------
def _connection_examples() -> list[dict[str, Any]]:
    text = CONNECTIONS_DOC.read_text(encoding="utf-8")
    examples = [json.loads(block) for block in _code_blocks(text, "json")]
    for line in "\n".join(_code_blocks(text, "bash")).splitlines():
        m = re.match(r"^AIRFLOW_CONN_([A-Z0-9_]+)='(.*)'$", line.strip())
        if m:
            conn_id = m.group(1).lower()
            assert conn_id in EXPECTED_CONN_TYPES, conn_id
            value = json.loads(m.group(2))
            assert value["conn_type"] == EXPECTED_CONN_TYPES[conn_id], line
            examples.append(value)
    return examples


def test_every_connection_id_has_json_examples():
    examples = _connection_examples()
    types = [e["conn_type"] for e in examples]
    for conn_id, conn_type in EXPECTED_CONN_TYPES.items():
        assert f"`{conn_id}`" in CONNECTIONS_DOC.read_text(encoding="utf-8")
        assert conn_type in types, f"no {conn_type} example for {conn_id}"


def test_connection_examples_parse_as_airflow_connections():
    from airflow.models.connection import Connection
    from airflow.providers.amazon.aws.utils.connection_wrapper import AwsConnectionWrapper
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    for example in _connection_examples():
        conn_type = example["conn_type"]
        conn_id = next(k for k, v in EXPECTED_CONN_TYPES.items() if v == conn_type)
        conn = Connection.from_json(json.dumps(example), conn_id=conn_id)
        if conn_type == "http":
            # The library's own parser must accept it and keep the documented meaning.
            spec = SourceSpec.from_connection_fields(
                name="doc", host=conn.host, port=conn.port, schema=conn.schema, login=conn.login,
                password=conn.password, extra=conn.extra_dejson)
            assert spec.base_url == example["host"].rstrip("/")
            assert spec.tenant == example.get("extra", {}).get("tenant")
            assert (spec.login, spec.password is not None) == (example.get("login"), "password" in example)
        elif conn_type == "aws":
            wrapper = AwsConnectionWrapper(conn=conn)
            assert wrapper.region_name == example["extra"]["region_name"]
            assert wrapper.endpoint_url == example["extra"].get("endpoint_url")
        else:
            url = SlackWebhookHook(slack_webhook_conn_id=conn_id)._build_conn_params(conn)["url"]
            assert url == f"https://hooks.slack.com/services/{example['password']}"
