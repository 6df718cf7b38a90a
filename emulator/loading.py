"""From what a user gives to the gateway model: a template (a file or JSON in memory), its
parameters and backend overrides, loaded into a :class:`~emulator.model.GatewayConfig`.

One place for the loading every entry point shares (the CLI's ``run``, :class:`Gateway`,
``emulator.sync`` and the pytest plugin), so a template that loads in one loads in all. The
time the certificates are checked against is read here, at the edge: the model takes it as a
value (``now=``).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeAlias

from emulator.model import BackendAddress, GatewayConfig, build_gateway_config

__all__ = ["BackendSpec", "Parameters", "load_config", "parse_backends"]

_DEPLOYMENT_PARAMETERS_SCHEMA: Final = (
    "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#"
)

#: Template parameters: ``--parameters``-style strings (``NAME=VALUE``, ``@file.json``, inline
#: JSON) or a mapping of name to value (``bytes`` values are base64-encoded, as a template's
#: ``data`` fields expect).
Parameters: TypeAlias = Mapping[str, object] | Sequence[str]
_Address: TypeAlias = str | tuple[str, int] | BackendAddress
#: One pool's replacement: ``"host:port"``, ``("host", port)``, a ``BackendAddress``, or a
#: sequence of those; a bare ``"host"`` keeps the backend settings' port.
BackendSpec: TypeAlias = _Address | Sequence[_Address]


def _parameter_args(parameters: Parameters) -> list[str]:
    """``parameters`` as the loader's ``--parameters`` strings.

    A mapping becomes one inline deploymentParameters document, so values keep their JSON type
    (an ``int`` parameter gets an int) instead of going through ``NAME=VALUE`` text conversion.
    """
    if isinstance(parameters, str):
        # A lone string would otherwise be read as a sequence of one-character arguments.
        return [parameters]
    if not isinstance(parameters, Mapping):
        return list(parameters)
    if not parameters:
        return []
    entries: dict[str, dict[str, Any]] = {}
    for name, value in parameters.items():
        plain = base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value
        entries[name] = {"value": plain}
    document = {
        "$schema": _DEPLOYMENT_PARAMETERS_SCHEMA,
        "contentVersion": "1.0.0.0",
        "parameters": entries,
    }
    try:
        return [json.dumps(document)]
    except TypeError as exc:
        msg = f"template parameter values must be JSON values or bytes: {exc}"
        raise TypeError(msg) from exc


def _backend_address(pool: str, item: object) -> BackendAddress:
    if isinstance(item, BackendAddress):
        return item
    if isinstance(item, tuple) and _is_host_port_pair(item):
        return BackendAddress(str(item[0]), int(item[1]))
    if isinstance(item, str) and item:
        host, sep, port_text = item.rpartition(":")
        if sep and host and port_text.isdigit() and not host.endswith(":"):
            return BackendAddress(host.strip("[]"), int(port_text))
        if ":" not in item or item.startswith("["):
            return BackendAddress(item.strip("[]"))
    msg = (
        f"backend for pool '{pool}' must be 'host:port', ('host', port) or a BackendAddress, "
        f"not {item!r}"
    )
    raise ValueError(msg)


def _is_host_port_pair(item: object) -> bool:
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], int)
        and not isinstance(item[1], bool)
    )


def parse_backends(backends: Mapping[str, BackendSpec]) -> dict[str, tuple[BackendAddress, ...]]:
    """Normalise a ``backends=`` argument to what :func:`with_backend_overrides` takes.

    Raises:
        ValueError: an address that is none of the accepted forms, or a pool with no address.
    """
    out: dict[str, tuple[BackendAddress, ...]] = {}
    for pool, spec in backends.items():
        if isinstance(spec, str | BackendAddress) or _is_host_port_pair(spec):
            out[pool] = (_backend_address(pool, spec),)
            continue
        addresses = tuple(_backend_address(pool, item) for item in spec)
        if not addresses:
            msg = f"backend pool '{pool}' needs at least one address"
            raise ValueError(msg)
        out[pool] = addresses
    return out


def load_config(
    template: str | os.PathLike[str] | Mapping[str, Any],
    parameters: Parameters = (),
    *,
    gateway: str | None = None,
) -> GatewayConfig:
    """Load and resolve a template (a file, or JSON already in memory) into the gateway model.

    The same path ``appgw-emulator run`` takes, so a template that loads here loads there.

    Raises:
        TemplateError, UnsupportedFeature, CertificateError: what the template loader and the
            model report, with file, JSON path and fix.
    """
    # Imported here: the loader is only needed when a template is given, not for a ready config.
    from emulator.arm.template import load_template, load_template_data, select_gateway

    args = _parameter_args(parameters)
    if isinstance(template, Mapping):
        loaded = load_template_data(dict(template), args)
    else:
        loaded = load_template(Path(template), args)
    return build_gateway_config(select_gateway(loaded, gateway), now=datetime.now(UTC))
