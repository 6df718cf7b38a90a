"""The emulator's exception tree.

Every error a user can cause carries enough to act on it without reading a traceback: the file, the
JSON path inside it, what is wrong, how to fix it, and the Azure error code when Azure has one (so a
user can search Azure's documentation for the same code). Fields are kept as attributes and the
message is built in ``__str__``, so the CLI, ``validate --output json`` (later) and tests all read
the same structured values.

Tree::

    EmulatorError
      TemplateError            load time: template, parameters, gateway model
        InvalidConfiguration   several problems at once (``problems``)
        UnsupportedFeature     valid for Azure, not emulated yet
      CertificateError         load time: PFX / trusted client CA data
      StartupError             binding ports, starting tasks
      ProxyError               request time; ``status`` is what the client gets
        BackendError
          BackendConnectError  502
          BackendTimeout       504
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BackendConnectError",
    "BackendError",
    "BackendTimeout",
    "CertificateError",
    "EmulatorError",
    "InvalidConfiguration",
    "ProxyError",
    "RequestBodyTimeout",
    "RequestTooLarge",
    "StartupError",
    "TemplateError",
    "UnsupportedFeature",
]


class EmulatorError(Exception):
    """Base of every error the emulator raises on purpose.

    Args:
        message: what is wrong, one sentence.
        file: the file the problem is in, when there is one.
        path: the JSON path inside that file (``resources[2].properties.sslProfiles[0]``).
        fix: what the user should do.
        code: the Azure error code, or an ``Emulator...`` code when Azure has none.
    """

    #: Default code of the class; an instance may carry a more specific one.
    code: ClassVar[str] = "EmulatorError"

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        path: str | None = None,
        fix: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.path = path
        self.fix = fix
        if code is not None:
            self.error_code = code
        else:
            self.error_code = type(self).code

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.file, self.path) if part)
        text = f"{where}: {self.message}" if where else self.message
        text += f" [{self.error_code}]"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text

    def located(self, *, file: str | None = None, path: str | None = None) -> EmulatorError:
        """Fill in the location when the raiser did not know it; returns self for ``raise``."""
        if self.file is None:
            self.file = file
        if self.path is None:
            self.path = path
        return self


class TemplateError(EmulatorError):
    """The template, its parameters or the gateway resource cannot be turned into a gateway."""

    code = "InvalidTemplate"


class InvalidConfiguration(TemplateError):
    """Several problems found in one configuration; ``problems`` holds each of them.

    Raised by the model build after it has looked at everything, so a user fixes a template in
    one round instead of one error per run.
    """

    code = "InvalidTemplate"

    def __init__(self, problems: list[EmulatorError]) -> None:
        self.problems = list(problems)
        first = self.problems[0]
        super().__init__(
            f"{len(self.problems)} problem(s) in the configuration",
            file=first.file,
            code=first.error_code if len(self.problems) == 1 else None,
        )

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class UnsupportedFeature(TemplateError):
    """A property Azure accepts but the emulator does not reproduce yet.

    Raised instead of ignoring the property: a user must never learn a wrong lesson from a
    silently dropped setting.
    """

    code = "EmulatorUnsupportedFeature"


class CertificateError(EmulatorError):
    """A server certificate (PFX) or trusted client CA upload that Azure would refuse."""

    code = "EmulatorCertificateInvalid"


class StartupError(EmulatorError):
    """The gateway cannot start: a port is busy, a privileged port needs mapping, and so on."""

    code = "EmulatorStartupError"


class ProxyError(EmulatorError):
    """A request-time failure that the gateway turns into an HTTP response of ``status``."""

    code = "EmulatorProxyError"
    status: ClassVar[int] = 500


class RequestTooLarge(ProxyError):
    """The request body is longer than ``ProxyLimits.max_request_body_bytes`` (nginx: 413)."""

    code = "EmulatorRequestTooLarge"
    status = 413


class RequestBodyTimeout(ProxyError):
    """No request body bytes within ``ProxyLimits.client_body_timeout_s`` (nginx: 408)."""

    code = "EmulatorRequestBodyTimeout"
    status = 408


class BackendError(ProxyError):
    """The backend could not serve the request."""

    code = "EmulatorBackendError"
    status = 502


class BackendConnectError(BackendError):
    """The backend refused the connection, reset it, or closed it before a full response."""

    code = "EmulatorBackendUnreachable"
    status = 502


class BackendTimeout(BackendError):
    """No response from the backend within the backend settings' ``requestTimeout``."""

    code = "EmulatorBackendTimeout"
    status = 504
