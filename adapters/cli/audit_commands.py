"""``tallyhub export ledger|usage|requests --from --to --format csv|jsonl --out PATH`` and
``tallyhub verify [--export PATH ...] [--from ISO] [--to ISO]``: auditable exports
(adapters/exports/) and the check of the whole ledger (application/verify.py) plus every
export's file, or of one window of record times (application/verify_window.py).

``verify`` exits with status 1 and lists every problem when anything does not add up;
it checks the files given with ``--export`` and, without a window, every recorded export
still at the path it was written to (with one, only the files given: a window reads its own
events, not every export's).
"""

import argparse
from pathlib import Path
from typing import Any

from adapters.cli.commands import open_services
from adapters.exports.checks import check_export
from adapters.exports.exporter import create_export, list_exports
from adapters.services import Services
from application.verify import LedgerVerifier
from application.verify_window import VerifyWindow, WindowVerifier
from domain.errors import InvalidRequest, ProjectionStopped

EXIT_MISMATCH = 1


def export(args: argparse.Namespace) -> tuple[Any, str]:
    with open_services() as services:
        manifest = create_export(services, args.kind, args.since, args.until, args.format, Path(args.out))
    return manifest, (
        f"wrote {manifest['rows']:,} {args.kind} rows to {args.out} (sha256 {manifest['sha256']})\n"
        f"manifest: {args.out}.manifest.json; chain head {manifest['chain']['head']}"
    )


def run_verify(
    services: Services, exports: list[Path], *, deep: bool = False, window: VerifyWindow | None = None
) -> dict[str, Any]:
    """The verify report as JSON: ``ok``, ``problems``, what was checked (with ``window``:
    that window's requests only, ``checked.window`` naming it), ``notes``."""
    checked_files: list[str] = []
    notes: list[str] = []

    def files() -> list[str]:
        problems: list[str] = []
        paths = [Path(p).resolve() for p in exports]
        for entry in list_exports(services) if window is None else []:
            path = Path(entry["path"])
            if path not in paths:
                if path.exists():
                    paths.append(path)
                else:
                    notes.append(f"{entry['kind']} export {entry['export_id']}: no file at {path} (not checked)")
        for path in paths:
            checked_files.append(str(path))
            try:
                problems += check_export(services, path)
            except ProjectionStopped as exc:  # verify names the stopped read model itself
                notes.append(f"{path}: not compared with the ledger: {exc}")
        return problems

    if window is None:
        report = LedgerVerifier(services.ledger, services.read_models).verify(extra=files, deep=deep)
    else:
        if deep:
            raise InvalidRequest("--deep loads every account's whole history: run it without a window", param="deep")
        report = WindowVerifier(services.ledger).verify(window)
        report.problems += files()
        notes.append("with a window, only the export files given with --export are checked")
    return {
        "ok": report.ok,
        "problems": report.problems,
        "checked": {**report.checked, "exports": checked_files},
        "notes": report.notes + notes,
    }


def verify(args: argparse.Namespace) -> tuple[Any, str, int]:
    window = VerifyWindow.of(args.since, args.until)
    with open_services() as services:
        data = run_verify(services, [Path(p) for p in args.export or []], deep=args.deep, window=window)
    lines = [_checked_line(data["checked"])]
    lines += [f"note: {note}" for note in data["notes"]]
    if data["ok"]:
        lines.append("ok: everything adds up")
    else:
        lines.append(f"FAILED: {len(data['problems'])} problem(s)")
        lines += [f"  - {problem}" for problem in data["problems"]]
    return data, "\n".join(lines), 0 if data["ok"] else EXIT_MISMATCH


def _checked_line(checked: dict[str, Any]) -> str:
    exports = f"{len(checked['exports'])} export files"
    if "window" not in checked:
        return (
            f"checked {checked['accounts']:,} accounts, {checked['charges']:,} charges, "
            f"{checked['request_records']:,} request records, {checked['open_holds']:,} open holds "
            f"(events up to position {checked['events_up_to_position']:,}) and {exports}"
        )
    window = checked["window"]
    return (
        f"checked the {checked['request_records']:,} request records from {window['from'] or 'the beginning'} "
        f"to {window['to'] or 'now'}: {checked['charges']:,} charges, {checked['refunds']:,} refunds, "
        f"{checked['accounts']:,} accounts (events up to position {checked['events_up_to_position']:,}) "
        f"and {exports}"
    )
