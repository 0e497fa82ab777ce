"""The Learning view's controls in a real browser (Debian's Chromium through Playwright),
against a real ``learnloop serve`` process over the tiny model: the settings form of
"Learn now", cancelling a running cycle, verdicts in plain words, two versions side by
side; and the API's own pages, ``/docs`` and ``/redoc``, with every request off this
machine blocked.

The fixtures and helpers are tests/browser.py's.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Page, Route, expect

from learnloop.storage.store import Store
from tests.browser import SLOW, Server, browser, open_page, page, serve, server, teach
from tests.serving import running_server
from tests.test_compare import seed_versions

# tests/browser.py's fixtures: a module-scoped Chromium, a `learnloop serve` process, a page
__all__ = ["browser", "page", "server"]

# a run that trains for a while (the tiny model takes milliseconds a step): long enough to
# be cancelled, never long enough to matter if the cancel did not land
LONG_LEARN = {"gate": False, "sft_epochs": 1000.0, "sft_learning_rate": 1e-2}
QUICK = {"gate": False, "sft_learning_rate": 1e-2}


def learning_view(page: Page, options: dict[str, object]) -> None:
    page.evaluate(f"window.LEARN_OPTIONS = {json.dumps(options)}")
    page.get_by_test_id("tab-learning").click()


def runs(server: Server) -> list[dict[str, object]]:
    with server.client() as http:
        listed: list[dict[str, object]] = http.get("/v1/learn").json()
    return listed


def test_the_settings_form_steers_learn_now_and_bad_values_start_nothing(
    page: Page, server: Server
) -> None:
    with server.client() as http:
        teach(http, "Capital of France?", "down", "Paris.")
    learning_view(page, QUICK)
    expect(page.get_by_test_id("learn-method")).to_have_value("auto")

    page.get_by_test_id("learn-max-steps").fill("0")
    page.get_by_test_id("learn-now").click()
    expect(page.get_by_test_id("error")).to_contain_text("max_steps")  # the server's 400
    expect(page.get_by_test_id("learn-now")).to_be_enabled()
    assert runs(server) == []  # nothing started

    page.get_by_test_id("learn-method").select_option("sft")
    page.get_by_test_id("learn-max-steps").fill("2")
    page.get_by_test_id("learn-now").click()
    expect(page.get_by_test_id("learn-status")).to_have_text("succeeded", timeout=SLOW)
    expect(page.get_by_test_id("error")).to_be_hidden()
    with server.client() as http:
        (run,) = http.get("/v1/learn").json()
        v1 = http.get("/v1/versions").json()[-1]
    assert v1["method"] == "sft"  # the form's method, not auto's SFT-then-DPO choice
    assert max(point["step"] for point in run["losses"]) == 2  # and its step cap

    # no feedback since: Learn now says so and starts nothing, unless forced
    page.get_by_test_id("learn-max-steps").fill("")
    page.get_by_test_id("learn-now").click()
    expect(page.get_by_test_id("error")).to_contain_text("no new feedback")
    assert len(runs(server)) == 1
    page.get_by_test_id("learn-force").check()
    page.get_by_test_id("learn-now").click()
    expect(page.get_by_test_id("learn-run")).to_have_text("Run 2:")
    expect(page.get_by_test_id("learn-status")).to_have_text("succeeded", timeout=SLOW)
    expect(page.get_by_test_id("learn-result")).to_contain_text("v2", timeout=SLOW)


def test_a_running_cycle_is_cancelled_from_the_page(page: Page, server: Server) -> None:
    with server.client() as http:
        teach(http, "Capital of France?", "down", "Paris.")
        teach(http, "Capital of Spain?", "up")
    learning_view(page, LONG_LEARN)
    expect(page.get_by_test_id("learn-cancel")).to_be_hidden()
    page.get_by_test_id("learn-now").click()
    expect(page.get_by_test_id("learn-status")).to_have_text("running")
    cancel = page.get_by_test_id("learn-cancel")
    expect(cancel).to_be_visible()
    cancel.click()
    expect(page.get_by_test_id("learn-status")).to_have_text("cancelled", timeout=SLOW)
    expect(page.get_by_test_id("learn-result")).to_contain_text("cancelled")
    expect(page.get_by_test_id("learn-result")).to_contain_text("the active version stays")
    expect(cancel).to_be_hidden()
    expect(page.get_by_test_id("learn-now")).to_be_enabled()
    expect(page.get_by_test_id("active-version")).to_have_text("base")
    with server.client() as http:
        (run,) = http.get("/v1/learn").json()
        assert run["status"] == "cancelled"
        assert [v["id"] for v in http.get("/v1/versions").json()] == ["base"]


def seed_verdicts() -> None:
    """Three versions (tests/test_compare.py) whose gate records carry a summary, and a
    run whose per-user cap dropped some of alice's feedback: the latest."""
    seed_versions()
    with Store() as store:
        store.db.execute(  # the gate's record of v2 and v3, as a cycle writes it
            "UPDATE versions SET gate = ? WHERE id = ?",
            [json.dumps(V2_GATE), "v2"],
        )
        store.db.execute("UPDATE versions SET gate = ? WHERE id = ?", [json.dumps(V3_GATE), "v3"])
        store.db.execute(  # what v2's cycle cost, and where it grew from
            "UPDATE versions SET metrics = ?, started_from = 'v1' WHERE id = 'v2'",
            [json.dumps({"cpu_seconds": 187.4, "energy_wh": 0.208})],
        )
        store.db.execute(  # v3 retired by a forget, as storage/forgetting.py leaves it
            """UPDATE versions SET retired_why = ?, removed_at = current_timestamp
               WHERE id = 'v3'""",
            ["trained on feedback of carol, forgotten by ops"],
        )
        store.db.execute("UPDATE runs SET config = ? WHERE id = 3", ['{"max_user_share": 0.5}'])
        quality = {"examples_in": 9, "capped": {"alice": 3}, "examples_out": 6}
        store.record_snapshot(3, "hash", 9, {"sft": [1]}, {"sft": 1}, quality)


V2_GATE = {
    "promote": True,
    "summary": "judged on what it was taught: 1 of 1 corrections now answered",
    "reasons": ["wins on taught_fixes 1.000 vs 0.000 for the active version"],
    "candidate": {"control_accuracy": 0.9},
    "active": {"control_accuracy": 0.8},
}
V3_GATE = {
    "promote": False,
    "summary": "not promoted: general questions got worse",
    "reasons": ["control accuracy drops from 0.900 (base) to 0.500"],
}


def test_verdicts_in_plain_words_and_two_versions_side_by_side(
    browser: Browser,
    tiny_model_dir: Path,
    home: Path,
    tmp_path: Path,
) -> None:
    seed_verdicts()
    with serve(tiny_model_dir, home, tmp_path) as seeded, open_page(browser, seeded.url) as page:
        page.get_by_test_id("tab-learning").click()
        # the latest run's verdict, in plain words, and what the per-user cap left out
        result = page.get_by_test_id("learn-result")
        expect(page.get_by_test_id("learn-summary")).to_have_text(V3_GATE["summary"])
        expect(result).to_contain_text("v3 not promoted")
        expect(page.get_by_test_id("learn-capped")).to_have_text(
            "3 of alice's items not used: one user may give at most half of the feedback."
        )
        v2 = page.locator("[data-testid=version-row][data-version=v2]")
        verdict = v2.get_by_test_id("version-verdict")
        expect(verdict.get_by_test_id("verdict-summary")).to_have_text(V2_GATE["summary"])
        reason = verdict.get_by_text("wins on taught_fixes")
        expect(reason).to_be_hidden()  # the numbers are folded under the summary
        verdict.locator("details summary").click()
        expect(reason).to_be_visible()
        expect(verdict).to_contain_text("control accuracy 0.9 (active 0.8)")
        expect(v2.get_by_test_id("version-cost")).to_have_text(
            "cost: 187 CPU-s, ~0.21 Wh, trained further from v1"
        )
        v3 = page.locator("[data-testid=version-row][data-version=v3]")
        expect(v3.get_by_test_id("version-retired")).to_have_text(
            "retired: trained on feedback of carol, forgotten by ops"
        )
        expect(v3.get_by_test_id("activate")).to_be_disabled()  # its files are gone

        # pick two versions: the answers in two columns, those that differ marked
        page.get_by_test_id("compare-a").select_option("base")
        page.get_by_test_id("compare-b").select_option("v1")
        page.get_by_test_id("compare-go").click()
        rows = page.get_by_test_id("compare-row")
        expect(rows).to_have_count(2)
        expect(page.locator("#compare-head-a")).to_have_text("base")
        expect(page.locator("#compare-head-b")).to_have_text("v1")
        france = rows.filter(has_text="capital of France")
        expect(france).to_have_attribute("data-differs", "true")
        expect(france).to_contain_text("differs")
        expect(france).to_contain_text("a correct answer says “Paris”")
        expect(france.get_by_test_id("compare-a-answer")).to_have_text("✗ Lyon.")
        expect(france.get_by_test_id("compare-b-answer")).to_have_text("✓ Paris.")
        expect(rows.filter(has_text="days")).to_have_attribute("data-differs", "false")
        expect(page.get_by_test_id("compare-summary")).to_contain_text(
            "1 of 2 answers differ (1 now correct, 0 no longer correct)"
        )
        page.get_by_test_id("compare-only-diff").check()
        expect(rows.filter(has_text="days")).to_be_hidden()
        expect(france).to_be_visible()

        # from the table: a version beside its parent
        v2.get_by_test_id("compare-with-parent").click()
        expect(page.locator("#compare-head-a")).to_have_text("v1")
        expect(page.locator("#compare-head-b")).to_have_text("v2")
        expect(page.get_by_test_id("compare-summary")).to_contain_text("3 of 3 answers differ")
        expect(rows.filter(has_text="Say hi").get_by_test_id("compare-a-answer")).to_have_text(
            "(not asked)"
        )
        # a version the gate never measured: the server's one message, the table kept
        page.get_by_test_id("compare-b").select_option("v3")
        page.get_by_test_id("compare-go").click()
        expect(page.get_by_test_id("error")).to_contain_text("no control answers are stored for v3")
        expect(rows).to_have_count(3)


# -- the API's pages, offline -------------------------------------------------------------


def block_the_internet(page: Page) -> list[str]:
    """Abort every request that leaves this machine; return the list of their URLs."""
    blocked: list[str] = []

    def handle(route: Route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", handle)
    return blocked


def test_docs_and_redoc_work_offline_and_try_it_out_is_let_in(
    browser: Browser,
    server: Server,
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    blocked = block_the_internet(page)
    page.goto(f"{server.url}/docs")
    operations = page.locator(".opblock")
    expect(operations.first).to_be_visible()
    assert operations.count() > 20  # the operations list rendered
    status = page.locator("#operations-data-status_v1_status_get")
    status.locator(".opblock-summary").click()
    status.get_by_role("button", name="Try it out").click()
    status.get_by_role("button", name="Execute").click()
    code = status.locator(".live-responses-table tbody .response-col_status").first
    expect(code).to_have_text("200")  # not the 403 of a browser call without the token
    expect(status.locator(".live-responses-table")).to_contain_text("active_version")

    page.goto(f"{server.url}/redoc")
    completions = page.locator("h2", has_text="Completions")  # an operation's heading
    expect(completions.first).to_be_visible()
    context.close()
    assert blocked == []  # nothing was even asked of another machine


def test_the_api_pages_and_their_files_stay_open_where_keys_are_required(
    tiny_model_dir: Path,
) -> None:
    with running_server(tiny_model_dir, require_keys=True) as keyed, keyed.client() as http:
        docs = http.get("/docs")
        redoc = http.get("/redoc")
        # a browser loads the files as part of the page, without a key or the token
        asset = http.get("/static/docs/swagger-ui-bundle.js", headers=SAME_SITE)
        css = http.get("/static/docs/swagger-ui.css", headers=SAME_SITE)
        refused_call = http.get("/v1/versions")
    assert docs.status_code == redoc.status_code == asset.status_code == css.status_code == 200
    assert "cdn." not in docs.text and "cdn." not in redoc.text
    assert "fonts.googleapis" not in redoc.text
    assert "X-Learnloop-Page-Token" in docs.text  # Try it out sends it
    assert docs.headers["cache-control"] == "no-store"  # the token changes with every start
    assert refused_call.status_code == 401  # the API itself still asks for a key


SAME_SITE = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Dest": "script"}
