"""``tallyhub``: the operator's command line. Every command takes ``--json`` and then
prints exactly one JSON document (the result, or ``{"error": {...}}``) on stdout.
Secrets are read from standard input, never from arguments.

Every failure exits non-zero with one line: ``error: <message>`` on stderr, or with
``--json`` ``{"error": {"message", "type", "code"}}`` on stdout — bad arguments (exit 2)
and unexpected exceptions (``internal_error``) included. ``--debug`` adds the traceback
on stderr."""

import json
import sys
import traceback

from adapters.cli.table import Handler, UsageError, build_parser
from application.acting import CLI, acting_as
from domain.errors import (
    AlreadyExists,
    AuthenticationFailed,
    InsufficientCredits,
    NotFound,
    NotInitialised,
    PermissionDenied,
    ProjectionStopped,
    SecretError,
    TallyhubError,
    UpstreamError,
)
from domain.money import InvalidAmount

__all__ = ["build_parser", "main"]

EXIT_ERROR = 1
EXIT_USAGE = 2

# the gateway's and workers' own work records no actor; every other command is the CLI's
LONG_RUNNING = frozenset(Handler(ref) for ref in ("commands:serve", "commands:worker", "commands:dashboard"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    as_json, debug = "--json" in argv, "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return _fail(str(exc), "invalid_request_error", "invalid_arguments", EXIT_USAGE, as_json)
    try:
        with acting_as(None if args.handler in LONG_RUNNING else CLI):
            result = args.handler(args)
    except Exception as exc:
        return _fail(*_failure(exc), EXIT_ERROR, as_json, debug)
    if result is None:
        return 0
    data, text, *status = result  # a command may end with its exit status (verify: 1 on a mismatch)
    print(json.dumps(data, indent=2) if args.json else text)
    return status[0] if status else 0


def _fail(message: str, type_: str, code: str, status: int, as_json: bool, debug: bool = False) -> int:
    if debug:
        traceback.print_exc(file=sys.stderr)
    if as_json:
        print(json.dumps({"error": {"message": message, "type": type_, "code": code}}))
    else:
        print(f"error: {message}", file=sys.stderr)
    return status


def _failure(exc: Exception) -> tuple[str, str, str]:
    """The message, type and code a command's failure is reported with."""
    # imported here, not at start (its dataclasses cost --help 7 %): a command that raised
    # SettingsError has imported the module already
    from adapters.settings import SettingsError

    if isinstance(exc, (TallyhubError, InvalidAmount)):
        return str(exc), _error_type(exc), getattr(exc, "code", "invalid_amount")
    if isinstance(exc, SettingsError):
        return str(exc), "configuration_error", "invalid_setting"
    # anything else: one line, not a traceback (--debug shows it)
    first_line = (str(exc).strip().splitlines() or [""])[0]
    message = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
    return message, "server_error", "internal_error"


def _error_type(exc: Exception) -> str:
    """The OpenAI error type the HTTP API gives the same error."""
    for cls, type_ in _TYPES:
        if isinstance(exc, cls):
            return type_
    return "invalid_request_error"


_TYPES: list[tuple[type[Exception], str]] = [
    (AuthenticationFailed, "authentication_error"),
    (PermissionDenied, "permission_error"),
    (InsufficientCredits, "insufficient_credits"),
    (NotFound, "invalid_request_error"),
    (AlreadyExists, "invalid_request_error"),
    (NotInitialised, "server_error"),
    (SecretError, "server_error"),
    (UpstreamError, "upstream_error"),
    (ProjectionStopped, "server_error"),
]


if __name__ == "__main__":
    sys.exit(main())
