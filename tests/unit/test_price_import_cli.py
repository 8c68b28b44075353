"""``tallyhub prices import`` and ``tallyhub prices drift`` on a real store (SQLite), through
the command line: ``--json`` documents and the text, a dry run that leaves the version as
it is, a LiteLLM file with ``--models``, drift over a threshold, and the models callers
asked for without a price, counted from the request log."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from adapters.bootstrap import build_ledger
from adapters.settings import Settings
from domain.request_record import RequestRecord
from tests.support.gateway import REPO, gateway_env
from tests.unit.test_attribution import details

TALLYHUB = [sys.executable, "-m", "adapters.cli.main"]


def run(env: dict[str, str], *args: str, json_out: bool = True, stdin: str = "") -> tuple[int, Any]:
    argv = [*TALLYHUB, *args, *(["--json"] if json_out else [])]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=120, input=stdin)
    assert "Traceback" not in done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout) if json_out else done.stdout + done.stderr


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    data_dir = tmp_path / "data"
    env = gateway_env(data_dir, None)
    assert run(env, "init")[0] == 0
    assert run(env, "providers", "add", "openai", "--kind", "openai", "--api-key-stdin", stdin="sk-test\n")[0] == 0
    assert run(env, "providers", "add", "claude", "--kind", "anthropic", "--api-key-stdin", stdin="sk-ant\n")[0] == 0
    assert run(env, "prices", "set", "openai/gpt-4o", "--input", "1", "--output", "2")[0] == 0
    assert run(env, "prices", "set", "openai/mine", "--input", "1", "--output", "2")[0] == 0
    ledger = build_ledger(Settings(data_dir=data_dir))
    try:  # requests for models with no price (usage-only mode records them; priced False)
        for model, outcome in (("openai/gpt-5", "completed"), ("openai/gpt-5", "failed"), ("claude/new", "completed")):
            record = replace(details(None), model=model, outcome=outcome, priced=False)  # type: ignore[arg-type]
            make = RequestRecord.completed if outcome == "completed" else RequestRecord.failed
            ledger.save(make(uuid4(), replace(record, usage=None) if outcome == "failed" else record))
    finally:
        ledger.close()
    return env


def version(env: dict[str, str]) -> int:
    status, shown = run(env, "prices", "show")
    assert status == 0, shown
    return int(shown["version"])


def test_a_dry_run_shows_the_diff_and_publishes_nothing(env: dict[str, str]) -> None:
    before = version(env)
    status, document = run(env, "prices", "import", "--catalog", "genai-prices", "--margin", "25", "--dry-run")
    assert status == 0, document
    assert (document["dry_run"], document["published"], document["version"]) == (True, False, before)
    assert document["catalog"] == "genai-prices" and document["catalog_version"] == "0.2.5"
    assert [c["model"] for c in document["added"]] == ["openai/gpt-5"]  # asked for in the request log
    [changed] = document["changed"]
    assert changed["model"] == "openai/gpt-4o" and changed["source"] == "genai-prices 0.2.5 openai/gpt-4o"
    assert changed["changes"]["input"] == {"old": "1.000000000", "new": "3.125000000"}
    assert changed["changes"]["provider_cost.input"] == {"old": None, "new": "2.500000000"}
    assert document["not_in_catalog"] == ["claude/new", "openai/mine"]
    assert version(env) == before
    status, text = run(
        env, "prices", "import", "--catalog", "genai-prices", "--margin", "25", "--dry-run", json_out=False
    )
    assert status == 0
    assert f"dry run, nothing published (the price book stays at version {before})" in text
    assert "~ openai/gpt-4o  " in text and "input 1.000000000 -> 3.125000000" in text
    assert "+ openai/gpt-5  input 1.562500000  output 12.500000000" in text
    assert "1 added, 1 changed, 0 unchanged" in text


def test_an_import_publishes_and_records_the_source(env: dict[str, str]) -> None:
    before = version(env)
    status, document = run(
        env, "prices", "import", "--catalog", "genai-prices", "--provider", "openai", "--margin", "25"
    )
    assert status == 0, document
    assert document["published"] and document["version"] == before + 1
    _, shown = run(env, "prices", "show")
    gpt4o = shown["models"]["openai/gpt-4o"]
    assert (gpt4o["input"], gpt4o["provider_cost"]["input"]) == ("3.125000000", "2.500000000")
    assert gpt4o["source"] == "genai-prices 0.2.5 openai/gpt-4o"
    assert shown["models"]["openai/mine"] == {**shown["models"]["openai/mine"], "input": "1.000000000"}
    assert "source" not in shown["models"]["openai/mine"]
    _, show_text = run(env, "prices", "show", json_out=False)
    assert "source genai-prices 0.2.5 openai/gpt-4o" in show_text
    status, text = run(
        env, "prices", "import", "--catalog", "genai-prices", "--provider", "openai", "--margin", "25", json_out=False
    )
    assert status == 0 and "nothing changed, nothing published" in text and "0 added, 0 changed, 2 unchanged" in text


def test_a_litellm_file_with_models(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    mini = {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07, "max_input_tokens": 128000}
    big = {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05}
    path.write_text(
        json.dumps({name: {"litellm_provider": "openai", **p} for name, p in (("gpt-4o", big), ("gpt-4o-mini", mini))})
    )
    status, document = run(
        env, "prices", "import", "--catalog", str(path), "--models", "openai/gpt-4o-mini", "--margin", "10"
    )
    assert status == 0, document
    assert [c["model"] for c in document["added"]] == ["openai/gpt-4o-mini"] and document["changed"] == []
    price = document["added"][0]["price"]
    assert (price["input"], price["output"], price["context_window"]) == ("0.165000000", "0.660000000", 128000)
    _, shown = run(env, "prices", "show")
    assert shown["models"]["openai/gpt-4o"]["input"] == "1.000000000"  # not named: as it was
    status, error = run(env, "prices", "import", "--catalog", str(path), "--models", "openai/o9")
    assert status == 1 and error["error"]["code"] == "invalid_request" and "openai/o9" in error["error"]["message"]


def test_drift_and_missing_prices(env: dict[str, str]) -> None:
    assert run(env, "prices", "import", "--catalog", "genai-prices", "--models", "openai/gpt-4o")[0] == 0
    status, document = run(env, "prices", "drift")
    assert status == 0, document
    assert document["drifted"] == [] and document["within_threshold"] == ["openai/gpt-4o"]
    assert document["missing_prices"][0]["model"] == "openai/gpt-5"
    assert [(m["model"], m["requests"], m["failed"]) for m in document["missing_prices"]] == [
        ("openai/gpt-5", 2, 1),
        ("claude/new", 1, 0),
    ]
    status, document = run(env, "prices", "drift", "--credits-per-usd", "1.05", "--threshold", "4.7")
    assert status == 0, document
    [drifted] = document["drifted"]
    assert drifted["model"] == "openai/gpt-4o" and drifted["source"] == "openai/gpt-4o"
    assert drifted["rates"][0] == {
        "rate": "input",
        "recorded": "2.500000000",
        "catalog": "2.625000000",
        "change_percent": "-4.76",
    }
    _, within = run(env, "prices", "drift", "--credits-per-usd", "1.05", "--threshold", "4.8")
    assert within["drifted"] == [] and within["within_threshold"] == ["openai/gpt-4o"]
    status, text = run(env, "prices", "drift", "--threshold", "0", json_out=False)
    assert status == 0
    assert "0 drifted, 1 within the threshold" in text
    assert "openai/gpt-5  2 requests (1 failed)" in text


def test_bad_arguments_are_refused_in_the_error_shape(env: dict[str, str]) -> None:
    for args in (
        ("import", "--catalog", "genai-prices", "--margin", "lots"),
        ("import", "--catalog", "genai-prices", "--margin", "-5"),
        ("import", "--catalog", "genai-prices", "--provider", "nope"),
        ("drift", "--days", "0"),
        ("import", "--catalog", "/no/such/file.json"),
    ):
        status, error = run(env, "prices", *args)
        assert status in (1, 2) and set(error["error"]) == {"message", "type", "code"}, args
