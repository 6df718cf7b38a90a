"""Bicep files, compiled to ARM JSON by the Bicep CLI the user has installed.

The emulator does not reimplement Bicep: ``main.bicep`` goes through ``bicep build FILE
--stdout`` (or ``az bicep build --file FILE --stdout``) and ``main.bicepparam`` through
``bicep build-params FILE --stdout`` (or ``az bicep build-params``); what comes out is the ARM
JSON that Azure itself would deploy, which then runs through :mod:`emulator.arm.template` like
any template. The standalone ``bicep`` wins over ``az`` when both are on ``PATH``: it starts in
a fraction of the time.

``build-params --stdout`` prints an object with ``parametersJson`` (and ``templateJson``), both
JSON documents as strings (Azure/bicep#14186); a bare parameters document is accepted as well.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

from emulator.arm import bounded_json
from emulator.errors import TemplateError

__all__ = [
    "BICEP_TIMEOUT_S",
    "compile_bicep",
    "compile_bicepparam",
    "is_bicep",
    "is_bicepparam",
]

#: The Bicep compiler starts .NET and may restore modules from a registry; a minute is ample
#: for one file and bounds a hung compiler.
BICEP_TIMEOUT_S: Final = 60.0
#: Characters of the compiler's stderr shown in an error (its diagnostics, one per line).
_STDERR_SHOWN: Final = 4000
_CODE: Final = "EmulatorBicepBuildFailed"
_INSTALL_FIX: Final = (
    "install the Bicep CLI (`az bicep install`, or the standalone `bicep` from "
    "https://learn.microsoft.com/azure/azure-resource-manager/bicep/install) so that `bicep` or "
    "`az` is on PATH, or compile it yourself and pass the JSON: {hint}"
)


def is_bicep(path: str | Path) -> bool:
    return str(path).lower().endswith(".bicep")


def is_bicepparam(path: str | Path) -> bool:
    return str(path).lower().endswith(".bicepparam")


def _command(verb: str, file: Path) -> list[str] | None:
    """The compiler command line for ``verb`` (build / build-params), or None without a tool."""
    bicep = shutil.which("bicep")
    if bicep is not None:
        return [bicep, verb, str(file), "--stdout"]
    az = shutil.which("az")
    if az is not None:
        return [az, "bicep", verb, "--file", str(file), "--stdout"]
    return None


def _run(verb: str, file: Path, *, hint: str) -> Any:
    if not file.is_file():
        raise TemplateError(
            "Cannot read the Bicep file: no such file.",
            file=str(file),
            fix="check the path (relative paths are resolved from the current directory).",
            code=_CODE,
        )
    command = _command(verb, file)
    if command is None:
        raise TemplateError(
            f"'{file.name}' is a Bicep file, and neither `bicep` nor `az` is on PATH"
            " to compile it.",
            file=str(file),
            fix=_INSTALL_FIX.format(hint=hint),
            code=_CODE,
        )
    shown = " ".join([Path(command[0]).name, *command[1:]])
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            timeout=BICEP_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TemplateError(
            f"`{shown}` did not finish within {BICEP_TIMEOUT_S:.0f} s.",
            file=str(file),
            fix=f"run it yourself to see why, or pass the compiled JSON: {hint}",
            code=_CODE,
        ) from None
    except OSError as exc:
        raise TemplateError(
            f"`{shown}` could not be started: {exc.strerror or exc}.",
            file=str(file),
            fix=_INSTALL_FIX.format(hint=hint),
            code=_CODE,
        ) from exc
    stderr = done.stderr.decode("utf-8", "replace").strip()
    if done.returncode != 0:
        raise TemplateError(
            f"`{shown}` failed (exit code {done.returncode}):\n{stderr[:_STDERR_SHOWN]}",
            file=str(file),
            fix="fix the Bicep errors above (the compiler's own diagnostics)",
            code=_CODE,
        )
    try:
        return bounded_json.loads(done.stdout.decode("utf-8-sig"))
    except ValueError as exc:
        raise TemplateError(
            f"`{shown}` printed something that is not JSON ({exc}).",
            file=str(file),
            fix=f"check the Bicep CLI version (0.4 or later), or pass the compiled JSON: {hint}",
            code=_CODE,
        ) from exc


def compile_bicep(file: Path) -> Any:
    """The ARM template JSON of ``main.bicep``, as ``bicep build --stdout`` prints it.

    Raises:
        TemplateError: no compiler on PATH, a compile error (its diagnostics included), a hung
            compiler, or output that is not JSON; each with the fix.
    """
    return _run(
        "build",
        file,
        hint=f"bicep build {file} --outfile main.json, then --template-file main.json",
    )


def compile_bicepparam(file: Path) -> Any:
    """The deploymentParameters JSON of ``main.bicepparam`` (``bicep build-params --stdout``)."""
    out = _run(
        "build-params",
        file,
        hint=f"bicep build-params {file} --outfile params.json, then --parameters @params.json",
    )
    if isinstance(out, dict) and isinstance(out.get("parametersJson"), str):
        try:
            return bounded_json.loads(out["parametersJson"])
        except ValueError as exc:
            raise TemplateError(
                f"the compiled parameters (parametersJson) are not JSON ({exc}).",
                file=str(file),
                code=_CODE,
            ) from exc
    return out
