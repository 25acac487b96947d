"""``python -m devstack up|down|status|env``: the whole local stack in one command.

``up`` starts, in order, the Prometheus side (``devstack.prom_stack``), the seeded S3 (moto) and the
Slack webhook sink, then writes ``<state_dir>/env.sh`` (``export`` lines) and ``<state_dir>/env.json``
with the Airflow connections pointing at them:

    AIRFLOW_CONN_PROMETHEUS_DEFAULT  http conn, host http://127.0.0.1:<prom port>
    AIRFLOW_CONN_AWS_DEFAULT         aws conn, login/password "testing", extra endpoint_url + region
    AIRFLOW_CONN_SLACK_FINOPS        slackwebhook conn; SlackWebhookHook builds
                                     http://127.0.0.1:<slack port>/services/T000/B000/devstack from it
    DEVSTACK_GROUND_TRUTH_PROM, DEVSTACK_GROUND_TRUTH_S3, DEVSTACK_SLACK_RECORD   file paths
    DEVSTACK_PROM_URL, DEVSTACK_S3_ENDPOINT, DEVSTACK_SLACK_URL                   base URLs

Ports and seed come from DEVSTACK_PROM_PORT (19090), DEVSTACK_EXPORTER_PORT (19101),
DEVSTACK_S3_PORT (19500), DEVSTACK_SLACK_PORT (19600), DEVSTACK_SEED (42); the state folder from
``proc.state_dir()`` (env DEVSTACK_DIR). ``--only s3,slack`` brings up a subset.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devstack import proc, s3_stack, slack_sink

COMPONENTS = ("prom", "s3", "slack")
PORT_ENV = {"prom_port": ("DEVSTACK_PROM_PORT", 19090), "exporter_port": ("DEVSTACK_EXPORTER_PORT", 19101),
            "s3_port": ("DEVSTACK_S3_PORT", 19500), "slack_port": ("DEVSTACK_SLACK_PORT", 19600),
            "seed": ("DEVSTACK_SEED", 42)}


def settings(**overrides: int | None) -> dict[str, int]:
    """Ports and seed: explicit overrides, else the DEVSTACK_* env vars, else the defaults."""
    out = {}
    for key, (env, default) in PORT_ENV.items():
        val = overrides.get(key)
        out[key] = int(val) if val is not None else int(os.environ.get(env, default))
    return out


def _prom_stack():
    # Imported lazily: it is a separate module with heavier dependencies, and `down`/`status` must
    # work even where it is absent.
    return importlib.import_module("devstack.prom_stack")


def _prom_truth_path(state_dir: Path, res: dict[str, Any]) -> str | None:
    """prom_stack reports its ground truth as a path, or as a dict that we then persist."""
    gt = res.get("ground_truth_path") or res.get("ground_truth")
    if gt is None:
        return None
    if isinstance(gt, str | Path):
        return str(gt)
    path = Path(state_dir) / "prom_ground_truth.json"
    path.write_text(json.dumps(gt, indent=1, default=str))
    return str(path)


DEMO_CONFIG = Path(__file__).resolve().parent / "finops.yaml"


def connection_env(prom_url: str, s3_endpoint: str, slack_port: int) -> dict[str, str]:
    """The AIRFLOW_CONN_* values for the devstack (JSON connection format)."""
    return {
        # The demo's own configuration: the shipped include/config/finops.yaml is a production template.
        "FINOPS_CONFIG": str(DEMO_CONFIG),
        "AIRFLOW_CONN_PROMETHEUS_DEFAULT": json.dumps(
            {"conn_type": "http", "host": prom_url, "extra": {"timeout": 30}}),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {"conn_type": "aws", "login": s3_stack.ACCESS_KEY, "password": s3_stack.SECRET_KEY,
             "extra": {"endpoint_url": s3_endpoint, "region_name": s3_stack.REGION}}),
        # The hook joins "<schema>://<host>" and the password (the webhook token path).
        "AIRFLOW_CONN_SLACK_FINOPS": json.dumps(
            {"conn_type": "slackwebhook", "schema": "http", "host": f"127.0.0.1:{slack_port}",
             "password": slack_sink.WEBHOOK_PATH.lstrip("/")}),
    }


def write_env(state_dir: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """Write env.json and env.sh (``export K='v'``) into ``state_dir``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    js, sh = state_dir / "env.json", state_dir / "env.sh"
    js.write_text(json.dumps(env, indent=1) + "\n")
    lines = ["# devstack connections; source me: . " + shlex.quote(str(sh))]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    sh.write_text("\n".join(lines) + "\n")
    return sh, js


def up_all(state_dir: Path | None = None, components: Sequence[str] = COMPONENTS, *,
           prom_port: int | None = None, exporter_port: int | None = None, s3_port: int | None = None,
           slack_port: int | None = None, seed: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """Bring up ``components`` (in prom, s3, slack order), write env.sh/env.json, return a summary.

    Summary: {state_dir, settings, env, env_sh, env_json, timings (s per component),
    prom / s3 / slack (each component's up() result; s3 without the ground truth dict)}.
    """
    sd = Path(state_dir) if state_dir else proc.state_dir()
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; choose from {COMPONENTS}")
    cfg = settings(prom_port=prom_port, exporter_port=exporter_port, s3_port=s3_port,
                   slack_port=slack_port, seed=seed)
    out: dict[str, Any] = {"state_dir": str(sd), "settings": cfg, "timings": {}}
    prom_url = f"http://127.0.0.1:{cfg['prom_port']}"
    s3_endpoint = f"http://127.0.0.1:{cfg['s3_port']}"
    extra: dict[str, str] = {}

    def step(name: str, fn: Any) -> Any:
        t0 = time.monotonic()
        res = fn()
        out["timings"][name] = round(time.monotonic() - t0, 2)
        if not quiet:
            print(f"  {name:<6} up in {out['timings'][name]:6.2f}s", flush=True)
        return res

    if "prom" in components:
        res = step("prom", lambda: _prom_stack().up(sd, port=cfg["prom_port"],
                                                    exporter_port=cfg["exporter_port"], seed=cfg["seed"]))
        prom_url = res.get("url", prom_url)
        out["prom"] = {k: v for k, v in res.items() if k != "ground_truth"}
        gt = _prom_truth_path(sd, res)
        if gt:
            extra["DEVSTACK_GROUND_TRUTH_PROM"] = gt
        extra["DEVSTACK_PROM_URL"] = prom_url
    if "s3" in components:
        res = step("s3", lambda: s3_stack.up(sd, port=cfg["s3_port"], seed=cfg["seed"]))
        s3_endpoint = res["endpoint_url"]
        out["s3"] = {k: v for k, v in res.items() if k != "ground_truth"}
        extra["DEVSTACK_GROUND_TRUTH_S3"] = res["ground_truth_path"]
        extra["DEVSTACK_S3_ENDPOINT"] = s3_endpoint
    if "slack" in components:
        res = step("slack", lambda: slack_sink.up(sd, port=cfg["slack_port"]))
        out["slack"] = res
        extra["DEVSTACK_SLACK_RECORD"] = res["record"]
        extra["DEVSTACK_SLACK_URL"] = res["url"]
    env = {**connection_env(prom_url, s3_endpoint, cfg["slack_port"]), **extra}
    sh, js = write_env(sd, env)
    out.update(env=env, env_sh=str(sh), env_json=str(js))
    return out


def down_all(state_dir: Path | None = None) -> dict[str, bool | None]:
    """Stop everything; {component: was_running} (None: prom_stack not available)."""
    sd = Path(state_dir) if state_dir else proc.state_dir()
    result: dict[str, bool | None] = {"slack": slack_sink.down(sd), "s3": s3_stack.down(sd)}
    try:
        prom = _prom_stack()
    except ModuleNotFoundError as exc:
        if exc.name != "devstack.prom_stack":
            raise
        result["prom"] = None
    else:
        result["prom"] = bool(prom.down(sd))
    return result


def status_all(state_dir: Path | None = None) -> dict[str, Any]:
    sd = Path(state_dir) if state_dir else proc.state_dir()
    out: dict[str, Any] = {"state_dir": str(sd)}
    try:
        prom = _prom_stack()
    except ModuleNotFoundError as exc:
        if exc.name != "devstack.prom_stack":
            raise
        out["prom"] = {"available": False}
    else:
        fn = getattr(prom, "status", None)
        out["prom"] = fn(sd) if fn else {"available": True, "status": "unknown"}
    out["s3"] = s3_stack.status(sd)
    out["slack"] = slack_sink.status(sd)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devstack", description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=["up", "down", "status", "env"])
    ap.add_argument("--only", default=",".join(COMPONENTS),
                    help="comma-separated subset of prom,s3,slack (for up)")
    args = ap.parse_args(argv)
    sd = proc.state_dir()
    if args.action == "up":
        comps = [c.strip() for c in args.only.split(",") if c.strip()]
        print(f"devstack up in {sd} ({', '.join(comps)})", flush=True)
        t0 = time.monotonic()
        try:
            res = up_all(sd, comps)
        except Exception as exc:
            print(f"devstack up FAILED: {exc}", file=sys.stderr)
            return 1
        print(f"ready in {time.monotonic() - t0:.2f}s")
        for name in COMPONENTS:
            if name in res:
                r = res[name]
                where = r.get("url") or r.get("endpoint_url")
                print(f"  {name:<6} {where}  pid={r.get('pid')}")
        if "s3" in res:
            st = s3_stack.status(sd)
            print(f"  s3 seeded: {st.get('objects')} objects, {st.get('bytes', 0) / 1e6:.1f} MB")
        print(f"env: . {res['env_sh']}")
    elif args.action == "down":
        for name, was in down_all(sd).items():
            print(f"  {name:<6} {'stopped' if was else 'not running' if was is False else 'unavailable'}")
    elif args.action == "status":
        print(json.dumps(status_all(sd), indent=1, default=str))
    else:
        sh = sd / "env.sh"
        if not sh.exists():
            print(f"no {sh}; run `python -m devstack up` first", file=sys.stderr)
            return 1
        print(sh.read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
