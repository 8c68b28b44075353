"""The command table (adapters/cli/table.py) is built without the application: starting
``tallyhub`` imports no command's module, and each command still reaches its handler."""

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator

from adapters.catalogs import GENAI_PRICES
from adapters.cli import arguments
from adapters.cli.main import LONG_RUNNING, build_parser
from adapters.cli.table import Handler
from adapters.exports.formats import FORMATS
from application.api_keys import MAX_GRACE
from application.portal import DEFAULT_LINK_TTL
from domain.export_log import EXPORT_KINDS
from domain.provider import MAX_CREDENTIAL_WEIGHT
from domain.webhook import EVENT_TYPES
from projections.audit import UNRECORDED

# what a command's own work needs; the table must not need any of it
HEAVY = ("eventsourcing", "adapters.bootstrap", "adapters.services", "adapters.cli.commands", "projections")


def handlers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Handler]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from handlers(child, (*path, name))
    handler = parser.get_default("handler")
    if handler is not None:
        yield " ".join(path), handler


def test_starting_the_cli_imports_no_command_module_and_no_event_store() -> None:
    probe = (
        "import sys, json\n"
        "from adapters.cli.main import build_parser\n"
        "build_parser().parse_args(['accounts', 'list', '--json'])\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True).stdout)
    assert [m for m in loaded if m.startswith(HEAVY)] == []


def test_every_command_names_a_handler_that_exists() -> None:
    found = dict(handlers(build_parser()))
    assert len(found) == 56 and "accounts list" in found and "keys issue" in found
    for command, handler in found.items():
        assert isinstance(handler, Handler), command
        assert callable(handler.resolve()), command
    assert found["keys issue"].ref == "key_commands:keys_issue"  # --models: the key module's issue, not the plain one


def test_only_the_gateway_worker_and_dashboard_run_without_the_cli_as_actor() -> None:
    long_running = {command for command, handler in handlers(build_parser()) if handler in LONG_RUNNING}
    assert long_running == {"serve", "worker", "dashboard"}


def test_the_limits_the_help_texts_name_are_their_owners() -> None:
    assert arguments.MAX_CREDENTIAL_WEIGHT == MAX_CREDENTIAL_WEIGHT
    assert arguments.MAX_GRACE_SECONDS == MAX_GRACE.total_seconds()
    assert arguments.EXPORT_KINDS == EXPORT_KINDS
    assert arguments.EXPORT_FORMATS == tuple(FORMATS)
    assert arguments.UNRECORDED == UNRECORDED
    assert arguments.DEFAULT_LINK_TTL_HOURS * 3600 == DEFAULT_LINK_TTL.total_seconds()
    assert arguments.GENAI_PRICES == GENAI_PRICES
    assert arguments.WEBHOOK_EVENT_TYPES == EVENT_TYPES
