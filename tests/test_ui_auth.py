"""The web page's sign-in box (ui/auth.js) against a service with --auth, in headless Chromium."""
import shutil
from pathlib import Path

import pytest

from tests.harness import TINY_MODEL, Server, free_port, run_app

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
expect = sync_api.expect
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed: apt-get install -y chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def test_sign_in_keeps_the_token_in_the_session_only(tmp_path):
    workspace = tmp_path / "workspace"
    token = run_app("-t", "adduser", "alice", "--workspace", str(workspace)).stdout.split()[-1]
    with Server(workspace, free_port(), free_port(), "--model", TINY_MODEL, "--pretrained", "none", "--auth",
                token=token) as server, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()
            problems = []
            page.on("pageerror", lambda err: problems.append(f"uncaught: {err}"))
            page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
            page.goto(f"http://127.0.0.1:{server.http_port}/ui/")
            expect(page.locator("#signin")).to_be_visible()  # the service answered 401 without a token

            page.fill("#signin-token", "cm_0123456789abcdef." + "A" * 43)
            page.click("#signin button[type=submit]")
            expect(page.locator("#signin-status")).to_have_text("token not accepted")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "ui-signin.png"))

            page.fill("#signin-token", token)
            page.click("#signin button[type=submit]")  # reloads the page, signed in
            expect(page.locator("#signout")).to_be_visible()
            expect(page.locator("#signin")).to_be_hidden()
            expect(page.locator("#service")).to_have_attribute("data-state", "online")  # /stats with the token
            assert page.evaluate("sessionStorage.getItem('crossmodal.token')") == token
            assert token not in page.evaluate("JSON.stringify(localStorage)") + page.evaluate("document.cookie")

            page.click("#signout")
            expect(page.locator("#signin")).to_be_visible()
            assert page.evaluate("sessionStorage.getItem('crossmodal.token')") is None
            assert not problems, problems
        finally:
            browser.close()
