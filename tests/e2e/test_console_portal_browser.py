"""Issue 19's whole flow in headless Chromium, on an embedded SQLite store from a fresh
``tallyhub init``: the admin signs in to the dashboard (started as ``tallyhub dashboard``
starts it) and, only through the console's forms, adds a provider pointing at a fake
OpenAI upstream (its secret typed into the password field), publishes a price after
reviewing its diff, creates the account ``acme``, grants it credit and issues a key whose
once-shown secret is read off the page. ``tallyhub serve`` on the same store then charges
that key for one chat completion; the customer, in a browser profile of their own, signs in
to ``/portal`` with the key and sees that exact charge and the balance it left; a second
customer (``globex``) sees none of it. The audit log names the admin key for every action.

With ``TALLYHUB_SCREENSHOTS_DIR`` set it also saves the docs' screenshots there (the
issued key's secret blurred out before its page is captured). Skipped only when no
Chromium can be found."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from application.acting import admin_actor
from dashboard.metrics import credits_text
from domain.money import NANOCREDITS_PER_CREDIT
from tests.dashboard.browser import Browser, find_chromium, sign_in, streamlit_server
from tests.fakes.openai_upstream import DEFAULT_REPLY_TEXT, FakeOpenAIUpstream, count_prompt_tokens, reply_tokens
from tests.support.gateway import Gateway, cli

UPSTREAM_KEY = "sk-upstream-console-7f3e21"
PROVIDER = "openai"
MODEL = f"{PROVIDER}/gpt-4o-mini"
INPUT_RATE, OUTPUT_RATE = 2_000, 8_000  # nanocredits per token: "2" and "8" credits per 1M typed in the form
GRANTED = 25 * NANOCREDITS_PER_CREDIT
GLOBEX_GRANTED = 5 * NANOCREDITS_PER_CREDIT
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello to the portal."}]
CONSOLE_ACTIONS = [  # what the admin did in the console, in order, as the audit log names it
    "provider.registered",
    "provider.credential_added",
    "prices.published",
    "account.created",
    "account.credit_granted",
    "key.issued",
]
PORTAL_PAGES = [  # the sidebar's paths (the default page, the balance, is at /)
    "",
    "portal-usage",
    "portal-requests",
    "portal-statement",
    "portal-keys",
]
SCREENSHOTS = "TALLYHUB_SCREENSHOTS_DIR"
SECRET_SHOWN = "document.querySelector('[data-testid=stCode] code')"
BLUR_SECRETS = (
    "document.head.appendChild(Object.assign(document.createElement('style'), "
    "{textContent: '[data-testid=stCode] { filter: blur(12px); }'}))"
)
BUSY = "!!document.querySelector('[data-testid=stStatusWidget]')"


@dataclass
class Flow:
    gateway: Gateway
    upstream: FakeOpenAIUpstream
    dashboard: str
    work: Path
    shots: Path | None

    async def shot(self, browser: Browser, name: str) -> None:
        if self.shots is None:
            return
        await browser.wait_for(f"!{BUSY}", what="the page to finish running")
        await browser.evaluate("document.activeElement?.blur()")  # no focus ring in the picture
        await asyncio.sleep(0.3)  # let a table's canvas paint: a picture only, nothing is asserted on it
        await browser.screenshot(self.shots / f"{name}.png")


@dataclass(frozen=True)
class Charged:
    request_id: str
    charge: int  # nanocredits
    tokens: tuple[int, int]  # input, output


@pytest.fixture
def flow(tmp_path: Path) -> Iterator[Flow]:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium found (install Debian's package: apt-get install -y chromium)")
    gateway = Gateway.initialised(tmp_path / "data")
    upstream = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    shots = Path(os.environ[SCREENSHOTS]) if os.environ.get(SCREENSHOTS) else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    try:
        with streamlit_server(gateway.env, tmp_path / "streamlit.log") as url:
            yield Flow(gateway, upstream, url, tmp_path, shots)
    finally:
        gateway.stop()
        upstream.stop()


def test_admin_builds_everything_in_the_console_and_the_customer_sees_the_exact_charge_in_the_portal(
    flow: Flow,
) -> None:
    chromium = find_chromium()
    assert chromium is not None
    asyncio.run(whole_flow(chromium, flow))


async def whole_flow(chromium: str, flow: Flow) -> None:
    admin = await open_browser(chromium, flow.work / "admin-profile")
    try:
        key = await admin_sets_up_acme(admin, flow)
        charged = call_the_api(flow, key)
        await admin_reads_the_audit_log(admin, flow)
    finally:
        await admin.close()
    customer = await open_browser(chromium, flow.work / "acme-profile")
    try:
        await acme_sees_its_charge_and_balance(customer, flow, key, charged)
    finally:
        await customer.close()
    globex_key = globex_by_the_cli(flow.gateway)
    other = await open_browser(chromium, flow.work / "globex-profile")
    try:
        await globex_sees_nothing_of_acme(other, flow, globex_key, charged)
    finally:
        await other.close()


async def open_browser(chromium: str, profile: Path) -> Browser:
    browser = Browser(chromium, profile)
    try:
        await browser.connect()
        await browser.set_viewport(1280, 900)
    except BaseException:
        await browser.close()
        raise
    return browser


# --- the admin, in the console ---------------------------------------------------------------


async def admin_sets_up_acme(browser: Browser, flow: Flow) -> str:
    await browser.navigate(flow.dashboard)
    await sign_in(browser, flow.gateway.admin_key)
    await browser.wait_for("!!document.querySelector('[data-testid=stSidebarNavLink][href$=\"/providers\"]')")

    await open_page(browser, "providers", "Providers")
    await browser.type_into(".st-key-provider_add_name input", PROVIDER)
    await browser.type_into(".st-key-provider_add_base_url input", flow.upstream.base_url)
    await browser.type_into(".st-key-provider_add_secret input[type=password]", UPSTREAM_KEY)
    await browser.click(".st-key-provider_add_submit button")
    await settled(browser, f"Provider {PROVIDER} (openai) added with 1 credential(s).")
    assert UPSTREAM_KEY not in await browser.evaluate("document.documentElement.outerHTML")
    await flow.shot(browser, "console-providers")

    await open_page(browser, "prices", "Prices")
    await browser.type_into(".st-key-price_form_model input", MODEL)
    await browser.type_into(".st-key-price_form_input input", "2")
    await browser.type_into(".st-key-price_form_output input", "8")
    await browser.click(".st-key-price_form_review button")
    await settled(browser, "Review before publishing")
    await settled(browser, "against version 0: 1 added, 0 changed, 0 removed, 0 unchanged")
    await flow.shot(browser, "console-prices-review")
    await browser.click(".st-key-price_publish button")
    await settled(browser, "Published price-book version 1 (1 models), effective now.")

    await open_page(browser, "credit", "Accounts")
    await browser.type_into(".st-key-account_create_name input", "acme")
    await browser.type_into(".st-key-account_create_starter input", "0")
    await browser.click(".st-key-account_create_submit button")
    await settled(browser, "Account acme created")
    await browser.type_into(".st-key-grant_amount input", "25")
    await browser.type_into(".st-key-grant_reason input", "browser e2e")
    await browser.click(".st-key-grant_submit button")
    await settled(browser, f"Granted {credits_text(GRANTED)} credits to acme.")
    await flow.shot(browser, "console-accounts")

    await open_page(browser, "keys", "API keys")
    await browser.click("[data-testid=stExpander] summary")
    await browser.type_into(".st-key-issue_name input", "portal-e2e")
    await browser.click(".st-key-issue_submit button")
    key = str(await browser.wait_for(f"{SECRET_SHOWN} && {SECRET_SHOWN}.innerText.trim()", what="the issued key"))
    assert key.startswith("thk_"), "the once-shown secret is an API key"
    await browser.evaluate(BLUR_SECRETS)  # never a usable secret in a picture
    await flow.shot(browser, "console-keys")
    await open_page(browser, "credit", "Accounts")
    await open_page(browser, "keys", "API keys")
    assert key not in await browser.evaluate("document.documentElement.outerHTML"), "the secret was shown once"
    the_setup_is_the_ledgers(flow.gateway)
    return key


def the_setup_is_the_ledgers(gateway: Gateway) -> None:
    """What the console did, as the CLI reads it back, each action recorded as the admin key."""
    env = gateway.env
    (provider,) = cli(env, "providers", "list")["data"]
    assert (provider["name"], provider["kind"]) == (PROVIDER, "openai")
    price = cli(env, "prices", "show")["models"][MODEL]
    assert (price["input"], price["output"]) == ("2.000000000", "8.000000000")
    balance = cli(env, "balance", "acme")
    assert (balance["balance"], balance["available"], balance["held"]) == (GRANTED, GRANTED, 0)
    rows = cli(env, "audit", "--limit", "50")["data"][::-1]
    assert [(row["action"], row["actor"]) for row in rows] == [
        ("deployment.initialised", "cli"),
        *[(action, admin_actor(gateway.admin_key)) for action in CONSOLE_ACTIONS],
    ]
    assert "key 'portal-e2e'" in rows[-1]["summary"]


def call_the_api(flow: Flow, key: str) -> Charged:
    """One streamed chat completion with the key the console issued, through ``tallyhub
    serve``: the final chunk's ``usage`` carries the charge (``usage.cost``, as OpenRouter's)."""
    gateway = flow.gateway.start()
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert raw.status_code == 200
    chunks = list(raw.parse())
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.prompt_tokens == count_prompt_tokens(MESSAGES)
    assert usage.completion_tokens == len(reply_tokens(DEFAULT_REPLY_TEXT))
    charge = usage.prompt_tokens * INPUT_RATE + usage.completion_tokens * OUTPUT_RATE
    receipt = usage.model_extra or {}
    assert (receipt["cost_nanocredits"], receipt["price_book_version"]) == (charge, 1)
    assert receipt["cost"] == charge / NANOCREDITS_PER_CREDIT
    wait_for_projections(gateway)
    return Charged(raw.headers["x-request-id"], charge, (usage.prompt_tokens, usage.completion_tokens))


def wait_for_projections(gateway: Gateway, timeout: float = 30.0) -> None:
    """Until every read model has every event (the portal and the audit page read them)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = cli(gateway.env, "projections", "status")["data"]
        if all(row["lag"] == 0 for row in rows):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the projections did not catch up: {rows}")
        time.sleep(0.2)


async def admin_reads_the_audit_log(browser: Browser, flow: Flow) -> None:
    """The audit page lists the console's actions, newest first, each by the admin key."""
    await open_page(browser, "audit", "Audit log")
    rows = await grid_rows(browser, "actor", len(CONSOLE_ACTIONS) + 1)
    actor = admin_actor(flow.gateway.admin_key)
    assert [(row["actor"], row["action"]) for row in rows] == [
        *[(actor, action) for action in reversed(CONSOLE_ACTIONS)],
        ("cli", "deployment.initialised"),
    ]
    await flow.shot(browser, "console-audit")


async def grid_rows(browser: Browser, column: str, count: int) -> list[dict[str, str]]:
    """The rows (column → text) of the page's data grid with ``column``, once it shows ``count`` rows."""
    found: list[dict[str, str]] = []

    async def shown() -> bool:
        found[:] = [
            dict(zip(grid["columns"], row, strict=False))
            for grid in await browser.data_grids()
            if column in grid["columns"]
            for row in grid["rows"]
        ]
        return len(found) == count

    await wait_until(shown, f"{count} rows in the table with {column}")
    return found


async def settled(browser: Browser, text: str) -> None:
    """Until ``text`` is shown and the run that shows it has finished."""
    await browser.wait_for_text(text)
    await browser.wait_for(f"!{BUSY}", what=f"the run that shows {text!r} to finish")


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


# --- the customers, in the portal ------------------------------------------------------------


async def portal_sign_in(browser: Browser, flow: Flow, key: str, account: str) -> None:
    await browser.navigate(f"{flow.dashboard}/portal")
    await browser.wait_for_text("Customer portal")
    await sign_in(browser, key)
    await browser.wait_for(f"(document.querySelector('h1') || {{}}).innerText === 'Balance of {account}'")
    links = await browser.evaluate(
        "[...document.querySelectorAll('[data-testid=stSidebarNavLink]')].map(a => new URL(a.href).pathname)"
    )
    assert links == [f"/{path}" for path in PORTAL_PAGES], "a portal session has the portal's pages only"


async def metric(browser: Browser, label: str) -> str:
    """The value of the ``st.metric`` labelled ``label``."""
    return str(
        await browser.wait_for(
            "(([...document.querySelectorAll('[data-testid=stMetric]')]"
            f".find(m => m.innerText.startsWith({json.dumps(label)})) || {{}})"
            ".querySelector?.('[data-testid=stMetricValue]') || {}).innerText",
            what=f"the metric {label}",
        )
    )


async def acme_sees_its_charge_and_balance(browser: Browser, flow: Flow, key: str, charged: Charged) -> None:
    charge = charged.charge
    await portal_sign_in(browser, flow, key, "acme")
    assert await metric(browser, "Balance (credits)") == credits_text(GRANTED - charge)
    assert await metric(browser, "Available (credits)") == credits_text(GRANTED - charge)
    assert await metric(browser, "Held by requests in flight (credits)") == credits_text(0)
    await flow.shot(browser, "portal-balance")

    await open_page(browser, "portal-usage", "Usage")
    await browser.wait_for_text(f"1 requests and {credits_text(charge)} credits charged")

    await open_page(browser, "portal-requests", "Requests")
    (row,) = await grid_rows(browser, "status", 1)
    assert (row["status"], row["key"], row["model"]) == ("200", "portal-e2e", MODEL)
    assert (int(row["input_tokens"]), int(row["output_tokens"])) == charged.tokens
    await flow.shot(browser, "portal-requests")
    receipt = await search_request(browser, charged.request_id)
    assert receipt is not None, "acme's own request is found"
    assert receipt["request id"] == charged.request_id
    assert receipt["charged (nanocredits)"] == str(charge)
    assert receipt["charged (credits)"] == credits_text(charge)
    assert receipt["model"] == MODEL


async def search_request(browser: Browser, request_id: str) -> dict[str, str] | None:
    """Search the portal's request log for ``request_id``: its receipt's fields, or None when
    the page says it is not found (a search answer replaces the request list)."""
    await browser.type_into(".st-key-portal_request_search input", request_id)
    await browser.press_enter()
    answer: list[str] = []

    async def answered() -> bool:
        columns = [grid["columns"] for grid in await browser.data_grids()]
        if "not found in this account" in await browser.page_text():
            answer[:] = ["not found"]
        elif ["field", "value"] in columns and not any("status" in c for c in columns):
            answer[:] = ["found"]
        return bool(answer)

    await wait_until(answered, "the search's answer")
    if answer == ["not found"]:
        return None
    return await receipt_fields(browser)


async def receipt_fields(browser: Browser) -> dict[str, str]:
    """The receipt's field → value, its table read at the top and then scrolled to the bottom."""
    fields: dict[str, str] = {}

    async def every_field_read() -> bool:
        for grid in await browser.data_grids():
            if grid["columns"] == ["field", "value"]:
                fields.update((row[0], row[1]) for row in grid["rows"] if len(row) == 2)
        await browser.scroll_grids(1.0)
        return "request id" in fields and "charged (nanocredits)" in fields

    await wait_until(every_field_read, "the receipt's fields")
    return fields


def globex_by_the_cli(gateway: Gateway) -> str:
    env = gateway.env
    cli(env, "accounts", "create", "globex", "--starter-credits", "0")
    cli(env, "credits", "grant", "globex", "5", "--reason", "browser e2e")
    key: str = cli(env, "keys", "issue", "globex", "--name", "globex-e2e")["key"]
    wait_for_projections(gateway)
    return key


async def globex_sees_nothing_of_acme(browser: Browser, flow: Flow, key: str, acme: Charged) -> None:
    await portal_sign_in(browser, flow, key, "globex")
    assert await metric(browser, "Balance (credits)") == credits_text(GLOBEX_GRANTED)
    shown = await browser.page_text()
    assert "acme" not in shown and credits_text(GRANTED - acme.charge) not in shown

    await open_page(browser, "portal-requests", "Requests")
    await browser.wait_for_text("No requests between")
    assert acme.request_id not in await browser.evaluate("document.documentElement.outerHTML")
    assert await search_request(browser, acme.request_id) is None
    shown = await browser.page_text()
    assert credits_text(acme.charge) not in shown and "Receipt" not in shown


# --- the navigation ----------------------------------------------------------------------------


async def open_page(browser: Browser, url_path: str, title: str) -> None:
    """Click the sidebar link to ``url_path`` (in this session: a new URL would sign it out)."""
    await browser.click(f"[data-testid=stSidebarNavLink][href$={json.dumps('/' + url_path)}]")
    await browser.wait_for(
        f"(document.querySelector('h1') || {{}}).innerText?.startsWith({json.dumps(title)})",
        what=f"the title of {title}",
        timeout=30,
    )
    await browser.wait_for(f"!{BUSY}", what=f"{title} to finish running")
    assert not await browser.evaluate("!!document.querySelector('[data-testid=stException]')"), title
