"""Where a Prometheus server or Mimir tenant lives and how to talk to it (pure, no Airflow)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from traceo_finops.shapes import Json

log = logging.getLogger(__name__)

MIMIR_PROMETHEUS_PREFIX = "/prometheus"  # Mimir's default -http.prometheus-http-prefix
_EXTRA_KEYS = {"flavor", "tenant", "headers", "verify", "timeout", "retries", "backoff_factor"}


class Flavor(StrEnum):
    """What speaks the Prometheus API: Prometheus itself, or Grafana Mimir (tenants, cardinality API, ruler)."""

    PROMETHEUS = "prometheus"
    MIMIR = "mimir"


class SourceSpec(BaseModel):
    """One Prometheus server or Mimir tenant: URL, identity and HTTP policy.

    ``base_url`` is what Grafana would use as the Prometheus data source URL: scheme, host, port and
    the Prometheus API prefix if any (``http://mimir:8080/prometheus``, ``https://x.grafana.net/api/prom``).
    For flavor ``mimir`` a bare root (``http://mimir:8080``) means the default prefix ``/prometheus``;
    see :attr:`api_url` and :attr:`root_url`. The password (a ``SecretStr``) and the extra headers
    (they may carry tokens) never show in ``repr``/``str``.
    """

    # hide_input_in_errors: a validation error must not echo a password or a URL with credentials.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    name: str = Field(min_length=1)
    base_url: str
    flavor: Flavor = Flavor.PROMETHEUS
    tenant: str | None = None
    login: str | None = None
    password: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    verify: bool | str = True
    timeout: float = Field(default=30.0, gt=0)
    retries: int = Field(default=3, ge=0)
    backoff_factor: float = Field(default=0.5, ge=0)

    @field_validator("base_url")
    @classmethod
    def _normalise_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url needs an http:// or https:// scheme and a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("base_url must not carry credentials; use login and password")
        if parts.query or parts.fragment:
            raise ValueError("base_url must not have a query string or fragment")
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))

    @field_validator("tenant", "login")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @property
    def api_url(self) -> str:
        """Where ``/api/v1/...`` lives: ``base_url``, plus ``/prometheus`` for a Mimir given by its root."""
        if self.flavor == "mimir" and not urlsplit(self.base_url).path:
            return self.base_url + MIMIR_PROMETHEUS_PREFIX
        return self.base_url

    @property
    def root_url(self) -> str:
        """Mimir's own root (``/api/v1/user_stats``, ``/config``): ``api_url`` minus a ``/prometheus`` end."""
        return self.api_url.removesuffix(MIMIR_PROMETHEUS_PREFIX)

    @classmethod
    def from_connection_fields(
        cls, name: str, host: str | None, port: int | str | None = None, schema: str | None = None,
        login: str | None = None, password: str | None = None, extra: Mapping[str, Json] | None = None,
        *, flavor: str | None = None,
    ) -> SourceSpec:
        """Build a spec from Airflow-Connection-like fields.

        ``host`` is a bare host or a URL with scheme and path prefix; without a scheme, ``schema``
        (``http``/``https``) or ``http`` is used. ``port`` is added when the host has none (a different
        port in the host is an error). ``extra`` keys: ``flavor``, ``tenant``, ``headers`` (dict or JSON
        text), ``verify`` (bool or CA bundle path), ``timeout``, ``retries``, ``backoff_factor``; the
        ``flavor`` argument overrides ``extra["flavor"]``. Raises ``ValueError`` naming the source.
        """
        extra = dict(extra or {})
        unknown = sorted(set(extra) - _EXTRA_KEYS)
        if unknown:  # Airflow's UI adds keys of its own; a typo would show up here
            log.warning("source %r: ignoring unknown connection extra keys %s", name, unknown)
        try:
            host = (host or "").strip()
            if not host:
                raise ValueError("the connection has no host")
            if "://" not in host:
                host = f"{(schema or 'http').strip().lower()}://{host}"
            parts = urlsplit(host)
            if port not in (None, ""):
                if parts.port is None:
                    parts = parts._replace(netloc=f"{parts.netloc}:{int(port)}")
                elif parts.port != int(port):
                    raise ValueError(f"host has port {parts.port} but the port field says {port}")
            fields: dict[str, Any] = {  # validated by the model
                "name": name, "base_url": urlunsplit(parts),
                "flavor": flavor or extra.get("flavor", "prometheus"),
                "tenant": extra.get("tenant"), "login": login, "password": password or None,
                "headers": _headers(extra.get("headers")),
            }
            if "verify" in extra:
                fields["verify"] = _verify(extra["verify"])
            for key in ("timeout", "retries", "backoff_factor"):
                if extra.get(key) not in (None, ""):
                    fields[key] = extra[key]
            return cls(**fields)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"source {name!r}: invalid connection settings: {problems}") from None
        except ValueError as exc:
            raise ValueError(f"source {name!r}: invalid connection settings: {exc}") from None


def _headers(value: object) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):  # extra edited as text in the Airflow UI
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise ValueError("extra 'headers' must be a mapping of header name to value")
    return {str(k): str(v) for k, v in value.items()}


def _verify(value: object) -> bool | str:
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    return text  # a CA bundle path
