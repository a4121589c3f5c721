"""The dashboard (docs/http.md) in a real headless chromium, against a real daemon with HTTP.

Debian's ``/usr/bin/chromium`` is driven by Playwright (never a browser of its own).
Every wait is a bounded poll in the page, failing with what it waited for.
"""

from __future__ import annotations

import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Daemon, agent, short_tempdir

CHROMIUM = Path("/usr/bin/chromium")
READ = "read-secret-1"
CONTROL = "control-secret-2"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ASSETS_LIMIT = 300 * 1024


def dashboard_files() -> dict[str, bytes]:
    folder = resources.files("codyd.http") / "dashboard"
    return {entry.name: entry.read_bytes() for entry in folder.iterdir() if entry.is_file()}


def test_assets_are_small_and_load_nothing_from_elsewhere() -> None:
    """The page, script and style ship in the package, ≤ 300 KB, with no http(s):// URL."""
    files = dashboard_files()
    assert {"index.html", "app.js", "style.css"} <= set(files)
    total = sum(len(body) for body in files.values())
    assert total <= ASSETS_LIMIT, f"the dashboard is {total} bytes, over {ASSETS_LIMIT}"
    for name, body in files.items():
        found = re.findall(rb"https?://[^\s\"'`)]*", body)
        assert not found, f"{name} refers to {found}: every asset must be served by codyd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Site:
    def __init__(self, daemon: Daemon, port: int) -> None:
        self.daemon = daemon
        self.base = f"http://127.0.0.1:{port}"
        self.started = 0

    def start(self, *command: str, **spec: Any) -> str:
        self.started += 1
        workspace = str(self.daemon.workspace(f"ws{self.started}"))
        run: dict[str, Any] = self.daemon.start_run(list(command), workspace=workspace, **spec)
        return str(run["run_id"])

    def state(self, run_id: str) -> str:
        return str(self.daemon.call("run.status", {"run_id": run_id})["state"])


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """One daemon for the module's tests: each starts runs of its own, in workspaces of its own."""
    root = short_tempdir()
    port = free_port()
    env = {
        "CODYD_HTTP_LISTEN": f"127.0.0.1:{port}",
        "CODYD_HTTP__READ_TOKEN": READ,
        "CODYD_HTTP__CONTROL_TOKEN": CONTROL,
    }
    daemon = Daemon(root, [], env)
    try:
        yield Site(daemon.start(), port)
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_the_page_needs_no_token_and_forbids_other_origins(site: Site) -> None:
    """GET / is the page (no token), with a CSP of this origin only; assets by fixed name."""
    with httpx.Client(base_url=site.base, timeout=10) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        script = client.get("/dashboard/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        again = client.get("/dashboard/app.js", headers={"If-None-Match": script.headers["etag"]})
        assert again.status_code == 304
        for path in ("/dashboard/nope.js", "/dashboard/..%2Fapp.py", "/dashboard/index.html"):
            assert client.get(path).status_code == 404, path
        assert client.get("/api/v1/runs").status_code == 401  # the data still needs a token


# -- in the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser_context() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (scripts/test installs the chromium package)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (it is in the test extra)")
    profile = Path(tempfile.mkdtemp(prefix="cdy-chromium-"))
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(CHROMIUM),
                args=BROWSER_ARGS,
                headless=True,
                viewport={"width": 1280, "height": 800},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(browser_context: Any) -> Iterator[Any]:
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def console(message: Any) -> None:
        # A refused API call (401, 403) or the favicon's 404 is an answer, not a fault of the page;
        # anything else said as an error (a CSP violation, an exception) is.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(f"{message.text} {message.location}")

    page.on("console", console)
    try:
        yield page
    finally:
        page.close()
    assert not errors, f"the page raised: {errors}"


def wait_for(page: Any, script: str, arg: Any, what: str, timeout_s: float = 5.0) -> None:
    """A bounded poll in the page: ``script`` (a JS function of ``arg``) becomes truthy."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(script, arg=arg, timeout=timeout_s * 1000, polling=50)
    except PlaywrightTimeout:
        raise AssertionError(f"after {timeout_s} s the page still did not show {what}") from None


ROW_STATE = """([id, state]) => {
  const cell = document.querySelector(`#runs-body [data-run-id="${id}"] .c-state`);
  return cell && cell.textContent === state;
}"""
ROW_SHOWN = """(id) => { const row = document.querySelector(`#runs-body [data-run-id="${id}"]`);
  return row && !row.hidden; }"""
VISIBLE = "(id) => { const el = document.getElementById(id); return el && !el.hidden; }"
TEXT_HAS = """([id, text]) => (document.getElementById(id).textContent || '').includes(text)"""


def poll_api(predicate: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout_s} s the API still did not show {what}")
        time.sleep(0.02)


def sign_in(page: Any, site: Site, wrong_first: bool = False) -> None:
    page.goto(site.base + "/")
    wait_for(page, VISIBLE, "auth", "the form asking for the read token")
    if wrong_first:
        page.fill("#auth-token", "wrong-read-token")
        page.click("#auth-use")
        wait_for(page, TEXT_HAS, ["auth-error", "Refused (401 unauthorized"], "the read refused")
        assert page.is_visible("#auth"), "a refused read token is asked for again"
    page.fill("#auth-token", READ)
    page.click("#auth-use")
    wait_for(page, "() => document.getElementById('link').dataset.state === 'live'", None,
             "the all-runs stream live")  # fmt: skip


def test_runs_appear_and_change_live(site: Site, browser: Any) -> None:
    """A new run shows within 1 s; a pause and a resume over the socket show as they happen."""
    sign_in(browser, site, wrong_first=True)
    run_id = site.start(*agent("sleeper"))
    wait_for(browser, ROW_SHOWN, run_id, f"the new run {run_id} within 1 s", timeout_s=1.0)
    wait_for(browser, ROW_STATE, [run_id, "running"], "the run running")
    site.daemon.call("run.pause", {"run_id": run_id, "now": True})
    wait_for(browser, ROW_STATE, [run_id, "paused"], "the run paused")
    site.daemon.call("run.resume", {"run_id": run_id})
    wait_for(browser, ROW_STATE, [run_id, "running"], "the run running again")
    # The state filter hides what does not match, live.
    browser.select_option("#filter-state", "paused")
    wait_for(browser, f"() => !({ROW_SHOWN})('{run_id}')", None, "the running run hidden")
    site.daemon.call("run.pause", {"run_id": run_id, "now": True})
    wait_for(browser, ROW_SHOWN, run_id, "the run shown once it is paused")


def test_label_filter(site: Site, browser: Any) -> None:
    """A label filter keeps the runs with that label, including ones started afterwards."""
    blue = site.start(*agent("sleeper"), labels={"team": "blue"})
    red = site.start(*agent("sleeper"), labels={"team": "red"})
    sign_in(browser, site)
    wait_for(browser, ROW_SHOWN, red, "the red run")
    browser.fill("#filter-label", "team=blue")
    wait_for(browser, f"() => ({ROW_SHOWN})('{blue}') && !({ROW_SHOWN})('{red}')", None,
             "only the blue run")  # fmt: skip
    later = site.start(*agent("sleeper"), labels={"team": "blue"})
    other = site.start(*agent("sleeper"), labels={"team": "red"})
    wait_for(browser, ROW_SHOWN, later, "the blue run started after the filter was set")
    wait_for(browser, f"() => document.querySelector('#runs-body [data-run-id=\"{other}\"]') !== null",
             None, "the red run in the table")  # fmt: skip
    assert not browser.is_visible(f'#runs-body [data-run-id="{other}"]')


def test_run_page_controls_with_the_control_token(site: Site, browser: Any) -> None:
    """The run page tails the output; a wrong token is refused (the run goes on), the right one pauses."""
    run_id = site.start(*agent("ticker", 0.05, 100_000))
    sign_in(browser, site)
    browser.click(f'#runs-body [data-run-id="{run_id}"] .c-run a')
    wait_for(browser, TEXT_HAS, ["run-tail", "tick "], "the live output of the turn")
    wait_for(browser, TEXT_HAS, ["run-events", "turn_started"], "the run's events")
    wait_for(browser, TEXT_HAS, ["run-stats", "running"], "the stats")

    browser.click('#run-view button[data-action="pause"]:not([data-now])')
    wait_for(browser, VISIBLE, "auth", "the form asking for the control token")
    browser.fill("#auth-token", "not-the-token")
    browser.click("#auth-use")
    wait_for(browser, TEXT_HAS, ["control-status", "refused (401 unauthorized"], "the refusal")
    wait_for(browser, VISIBLE, "auth", "the control token asked again")
    assert "Refused" in browser.inner_text("#auth-error")
    assert site.state(run_id) == "running", "a refused pause must not pause the run"
    assert "not-the-token" not in site.daemon.log()

    browser.fill("#auth-token", READ)  # the read token does not allow control either
    browser.click("#auth-use")
    wait_for(browser, TEXT_HAS, ["control-status", "refused (403 forbidden"], "the 403")
    assert site.state(run_id) == "running"

    browser.fill("#auth-token", CONTROL)
    browser.click("#auth-use")
    poll_api(lambda: site.state(run_id) in ("pausing", "paused"), "the run pausing")
    wait_for(browser, TEXT_HAS, ["control-status", "pause: done"], "the pause done")
    assert browser.evaluate("sessionStorage.getItem('codyd.token.control')") == CONTROL
    assert CONTROL not in site.daemon.log() and READ not in site.daemon.log()

    # The token is kept: resume (withdrawing the pause during the turn) asks for nothing.
    wait_for(browser, TEXT_HAS, ["run-stats", "pausing"], "the run pausing in its stats")
    wait_for(browser, "() => !document.querySelector('#run-view [data-action=resume]').disabled",
             None, "resume enabled")  # fmt: skip
    browser.click('#run-view button[data-action="resume"]')
    poll_api(lambda: site.state(run_id) == "running", "the run resumed")
    assert browser.is_hidden("#auth")
    wait_for(browser, TEXT_HAS, ["control-status", "resume: done"], "the resume done")
    browser.click('#run-view button[data-action="pause"][data-now]')
    poll_api(lambda: site.state(run_id) == "paused", "the run paused now (its turn stopped)")
    wait_for(browser, TEXT_HAS, ["run-events", "run_paused"], "run_paused among the events")

    # say: the message is queued for the next turn, and the page says so.
    browser.fill("#say-text", "hello from the dashboard")
    browser.click("#say button")
    wait_for(browser, TEXT_HAS, ["control-status", "say: queued (1 waiting)"], "the answer to say")
    assert site.daemon.call("run.status", {"run_id": run_id})["operator_messages_queued"] == 1


def test_a_phone_sees_cards(site: Site, browser: Any) -> None:
    """Under 600 px the table's head is gone and each run is a card of labelled lines."""
    run_id = site.start(*agent("sleeper"))
    browser.set_viewport_size({"width": 390, "height": 800})
    sign_in(browser, site)
    wait_for(browser, ROW_SHOWN, run_id, "the run")
    layout = browser.evaluate(
        """(id) => {
          const row = document.querySelector(`#runs-body [data-run-id="${id}"]`);
          const cell = row.querySelector('.c-state');
          return {
            head: getComputedStyle(document.querySelector('#runs .row.head')).display,
            row: getComputedStyle(row).display,
            label: getComputedStyle(cell, '::before').content,
            wide: document.documentElement.scrollWidth,
          };
        }""",
        run_id,
    )
    assert layout["head"] == "none" and layout["row"] == "block", layout
    assert layout["label"] == '"State"', layout
    assert layout["wide"] <= 390, f"the page scrolls sideways on a phone: {layout}"


def test_wait_and_attention_read_as_sentences(site: Site, browser: Any) -> None:
    """A run's wait, attention or error fills its Wait / attention cell as a sentence."""
    sign_in(browser, site)
    shown = browser.evaluate(
        """() => {
          const until = new Date(); until.setHours(15, 42, 0, 0);
          const stats = {turns: 0, failed_turns: 0, tokens: {input: 0, output: 0, cached: 0, total: 0},
                         cost_usd: 0, files: {read: 0, written: 0, deleted: 0}, tests: {runs: 0, passed: 0, failed: 0}};
          const base = {agent: 'claude', state: 'running', phase: 'waiting', created_at: 1, current_turn: 3,
                        last_activity: null, stats, wait: null, attention: null, error: null, last_seq: 1};
          const runs = [
            {...base, run_id: 'w', wait: {reason: 'rate_limited', until: until.getTime() / 1000, account: null}},
            {...base, run_id: 'a', attention: {reason: 'no_progress', message: '5 turns without a change', at: 1}},
            {...base, run_id: 'f', state: 'failed', error: {code: 'turn_failures', message: '3 turns failed'}},
          ];
          const table = window.codydDashboard.table;
          runs.forEach((run) => table.put(run));
          table.flush();
          return runs.map((run) => document.querySelector(`#runs-body [data-run-id="${run.run_id}"] .c-wait`).textContent);
        }"""
    )
    assert shown == [
        "waiting for claude until 15:42 (rate limited)",
        "needs attention (no progress): 5 turns without a change",
        "turn_failures: 3 turns failed",
    ]


def test_anonymous_read_asks_only_for_the_control_token(
    daemon_factory: Callable[..., Daemon], browser: Any
) -> None:
    """With http.anonymous_read the table shows without a token; a control still asks for one."""
    port = free_port()
    daemon = daemon_factory(
        env={
            "CODYD_HTTP_LISTEN": f"127.0.0.1:{port}",
            "CODYD_HTTP__ANONYMOUS_READ": "true",
            "CODYD_HTTP__CONTROL_TOKEN": CONTROL,
        }
    )
    site = Site(daemon, port)
    run_id = site.start(*agent("sleeper"))
    browser.goto(f"{site.base}/#/runs/{run_id}")
    wait_for(browser, TEXT_HAS, ["run-stats", "running"], "the run's stats without a token")
    assert browser.is_hidden("#auth")
    browser.click('#run-view button[data-action="cancel"]')
    wait_for(browser, VISIBLE, "auth", "the form asking for the control token")
    browser.click("#auth-cancel")
    wait_for(browser, TEXT_HAS, ["control-status", "not sent"], "the cancel not sent")
    assert site.state(run_id) == "running"
