"""A newcomer's first ten minutes: `make run` in a fresh data directory, then the dashboard with what it printed.

`make run` is run as a newcomer runs it (the venv is already installed; the default model converted once
under var/models is reused through MODEL_CACHE_DIR), on its own port, and stopped at the end. The test reads
the printed login and key, logs in, sees the demo organization's balance, makes a request with the key and
finds it in the usage page, and sends one playground message. On the way it takes the README's tour
screenshots (keys, usage, the playground mid-answer, the staff billing page): into docs/ with
DOCS_SCREENSHOTS=docs (`make screenshots`), else into the run's screenshot folder.
"""
import os
import re
import signal
import socket
import subprocess
import threading
from pathlib import Path

import openai
import pytest

from tests.browser.conftest import SCREENSHOTS, log_in
from tests.poll import wait_until

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"
TOUR_VIEWPORT = {"width": 1280, "height": 760}
STAFF_EMAIL, STAFF_PASSWORD = "ops@example.com", "an operator's long password 7"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra) -> dict:
    """What a newcomer's shell has: no settings from the test run."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    return {**env, **extra}


@pytest.fixture
def make_run(tmp_path):
    """`make run` serving from a fresh DATA_DIR; yields (base URL, printed lines, env)."""
    port = _free_port()
    # The converted model and the compiled kernels are shared with the rest of the run, as with an earlier `make run`.
    env = _clean_env(DATA_DIR=str(tmp_path / "data"), MODEL_CACHE_DIR=str(ROOT / "var" / "models"), PORT=str(port),
                     TORCHINDUCTOR_CACHE_DIR=str(ROOT / "var" / "compile-cache"))
    process = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        def serving():
            if _answers(base):
                return True
            assert process.poll() is None, "make run stopped:\n" + "".join(lines)
            return False

        wait_until(serving, timeout=600, interval=0.5, message=lambda: "make run to serve:\n" + "".join(lines))
        yield base, lines, env
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _answers(base: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=1):
            return True
    except OSError:
        return False


def _printed(lines: list[str], label: str) -> str:
    for line in lines:
        if line.startswith(label):
            return line[len(label):].strip()
    raise AssertionError(f"make run printed no {label!r} line:\n" + "".join(lines))


@pytest.fixture
def tour(browser):
    """tour(page, name): a small screenshot of what the page shows, for the README; checks its heading."""
    folder = Path(os.environ["DOCS_SCREENSHOTS"]) if os.environ.get("DOCS_SCREENSHOTS") else SCREENSHOTS / "tour"
    folder = folder if folder.is_absolute() else ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, name: str, heading: str) -> Path:
        assert page.locator("h1").first.inner_text().strip() == heading
        assert not page.locator(".error-page, #server-error").count()
        path = folder / f"{name}.png"
        page.screenshot(path=str(path))
        return path

    return take


def test_make_run_leads_to_a_dashboard_with_credit_a_key_and_its_usage(make_run, browser, tour):
    base, lines, env = make_run
    steps = [line for line in lines if line.startswith("==> ")]
    assert any("Migrating" in s for s in steps) and any("model" in s for s in steps), steps
    assert sum("done in" in line for line in lines) >= 2, lines  # each step says how long it took
    assert _printed(lines, "Dashboard:") == f"{base}/"
    login = _printed(lines, "Login:").split()
    email, password = login[0], login[2]
    key = _printed(lines, "API key:").split()[0]
    assert key.startswith("sk-") and f"Bearer {key}" in _printed(lines, "Try it:")

    answer = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=8)
    assert answer.usage.completion_tokens > 0

    context = browser.new_context(base_url=base, viewport=TOUR_VIEWPORT)
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        log_in(page, email, password)
        page.goto("/billing/")
        assert re.fullmatch(r"\$4\.\d+", page.inner_text("#balance").strip())  # 5 USD less the request
        page.goto("/keys/")
        assert page.locator("text=demo").count() >= 1
        tour(page, "keys", "API keys")

        row = page.locator(f"#usage-requests tr[data-request-id='{answer.id}']")
        def listed():  # the usage record is written as the request settles
            page.goto("/usage/?range=7")
            return row.count()

        wait_until(listed, timeout=30, interval=0.5, message=f"request {answer.id} on the usage page")
        assert row.count() == 1 and MODEL in row.inner_text()
        tour(page, "usage", "Usage")

        page.goto("/playground/")
        page.wait_for_selector("#pg-status:has-text('Connected')")
        page.select_option("#pg-model", MODEL)
        page.fill("#pg-max-tokens", "64")
        page.fill("#pg-message", "Write a short poem about a lighthouse.")
        page.click("#pg-send")
        text = page.locator("[data-testid=assistant-text]").last
        page.wait_for_function("el => el.textContent.trim().split(/\\s+/).length >= 6", arg=text.element_handle())
        tour(page, "playground", "Playground")  # mid-answer
        page.locator("[data-testid=turn-usage]").last.wait_for(timeout=180_000)  # a busy 2-core machine
        assert text.inner_text().strip()
    finally:
        context.close()

    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "manage.py", "createsuperuser", "--no-input",
                    "--email", STAFF_EMAIL], cwd=ROOT, check=True, capture_output=True,
                   env={**env, "DJANGO_SUPERUSER_PASSWORD": STAFF_PASSWORD})
    staff = browser.new_context(base_url=base, viewport=TOUR_VIEWPORT)
    staff.set_default_timeout(60_000)
    try:
        page = staff.new_page()
        log_in(page, STAFF_EMAIL, STAFF_PASSWORD)
        page.goto("/staff/billing/")
        assert page.locator("text=demo").count() >= 1
        tour(page, "staff-billing", "Billing")
    finally:
        staff.close()
