"""The web UI in a real browser against a real cluster: forms, live output, kill, list actions, sign-in, layout."""

from __future__ import annotations

import base64
import json
import re
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Locator, Page, expect

from cronbus.common.consul import keys
from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.client import MAX_TXN_OPS
from cronbus.common.consul.store import definition, encode
from cronbus.common.models import Job, now_utc
from tests.e2e.conftest import (
    ADMIN_TOKEN,
    DESKTOP,
    PHONE,
    READ_TOKEN,
    VIEWER_ZONE,
    Gateway,
    open_context,
    shoot,
    start_cluster,
    watch,
)
from tests.helpers import Cluster, wait_until

SHELL = "shell"


def shell_job(name: str, command: str, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "schedule": "@manually",
        "executor": SHELL,
        "executor_config": {"command": command, "shell": "true"},
        **extra,
    }


def nav(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True)


def actions(page: Page) -> Locator:
    return page.get_by_role("group", name="Job actions")


def test_root_redirects_to_the_ui_which_loads_only_from_the_gateway(gateway: Gateway, page: Page) -> None:
    page.goto(gateway.url + "/")
    expect(page).to_have_url(re.compile(r"/ui/(#/)?$"))
    expect(page.get_by_role("heading", level=1, name="Dashboard")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard")).to_have_attribute(
        "aria-current", "page"
    )
    # The page fixture fails the test on any request to another host (fonts, icons, CDNs).


def test_create_a_job_through_the_form_then_see_it_run_and_its_output(gateway: Gateway, page: Page) -> None:
    page.goto(gateway.url + "/ui/")
    page.get_by_role("link", name="New job").click()
    expect(page.get_by_role("heading", level=1, name="New job")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("greet")
    page.get_by_label("Display name").fill("Greeter")
    page.get_by_role("textbox", name="Schedule", exact=True).fill("@manually")
    expect(page.locator("#schedule-preview")).to_contain_text("Never by itself")
    page.get_by_label("Command").fill('echo "hello from the form"; echo "second line"')
    page.get_by_label("Run through /bin/sh -c").check()
    page.get_by_role("button", name="Add label").click()
    page.get_by_label("Label 1 key").fill("team")
    page.get_by_label("Label 1 value").fill("qa")
    page.get_by_label("Run it once right after saving").check()
    page.get_by_role("button", name="Create job").click()

    expect(page).to_have_url(re.compile(r"#/jobs/greet$"))
    expect(page.get_by_role("heading", level=1, name="Greeter")).to_be_visible()
    row = page.locator(".exec-table tbody tr").first
    expect(row).to_contain_text("Succeeded", timeout=30_000)
    if not page.locator("#output-panel").is_visible():
        row.get_by_role("button", name=re.compile("Output")).click()
    output = page.locator("#output-panel pre.output")
    expect(output).to_contain_text("hello from the form")
    expect(output).to_contain_text("second line")
    expect(page.locator("#output-panel")).to_contain_text("exit code 0")

    stored = gateway.job("greet")
    assert stored is not None
    assert stored["metadata"] == {"team": "qa"}
    assert stored["executor_config"] == {"command": 'echo "hello from the form"; echo "second line"', "shell": "true"}
    assert stored["displayname"] == "Greeter"


def test_a_schedule_the_gateway_rejects_shows_its_message_inline_then_a_preview_once_fixed(
    gateway: Gateway, page: Page
) -> None:
    page.goto(gateway.url + "/ui/#/jobs/new")
    schedule = page.get_by_role("textbox", name="Schedule", exact=True)
    page.get_by_label("Name", exact=True).fill("nightly")
    schedule.fill("0 61 * * *")
    error = page.locator("#job-schedule-error")
    expect(error).to_be_visible()
    expect(error).not_to_be_empty()
    expect(schedule).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#schedule-preview")).to_contain_text("No preview")

    # Saving is refused while it is invalid, with the reason in the summary.
    page.get_by_role("button", name="Create job").click()
    summary = page.locator(".job-form > .alert-bad")
    expect(summary).to_be_visible()
    expect(summary).to_contain_text("Schedule")
    expect(summary).to_contain_text("Command")

    schedule.fill("30 2 * * *")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    expect(error).to_be_hidden()
    expect(schedule).not_to_have_attribute("aria-invalid", "true")
    preview = page.locator("#schedule-preview")
    expect(preview).to_contain_text("At 02:30 every day")
    expect(preview.locator("tbody tr")).to_have_count(5)
    expect(preview).to_contain_text("Europe/Berlin")
    expect(preview).to_contain_text(VIEWER_ZONE)

    page.get_by_label("Command").fill("true")
    page.get_by_role("button", name="Create job").click()
    expect(page).to_have_url(re.compile(r"#/jobs/nightly$"))
    expect(page.locator(".next-fires tbody tr")).to_have_count(5)
    stored = gateway.job("nightly")
    assert stored is not None
    assert (stored["schedule"], stored["timezone"]) == ("30 2 * * *", "Europe/Berlin")


def test_edit_then_clone_a_job_keeps_what_the_form_does_not_show(gateway: Gateway, page: Page) -> None:
    gateway.create_job(
        name="etl",
        schedule="0 0 6 * * *",
        timezone="Asia/Tokyo",
        executor="shell",
        executor_config={"command": "run-etl", "shell": "true", "env": "A=1"},
        processors={"log": {"forward": "true"}},
        retries=2,
        tags={"dc": "dc1"},
    )
    page.goto(gateway.url + "/ui/#/jobs/etl")
    page.get_by_role("link", name="Edit", exact=True).click()
    expect(page.get_by_role("heading", level=1, name="Edit etl")).to_be_visible()
    expect(page.get_by_label("Name", exact=True)).to_have_attribute("readonly", "")
    expect(page.get_by_label("Variable 1 name")).to_have_value("A")
    page.get_by_label("Display name").fill("Nightly ETL")
    page.get_by_role("button", name="Add variable").click()
    page.get_by_label("Variable 2 name").fill("B")
    page.get_by_label("Variable 2 value").fill("two")
    page.get_by_role("textbox", name="Schedule", exact=True).fill("0 0 7 * * *")
    expect(page.locator("#schedule-preview")).to_contain_text("At 07:00 every day")
    expect(page.locator("#schedule-preview")).to_contain_text("Asia/Tokyo")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("heading", level=1, name="Nightly ETL")).to_be_visible()
    stored = gateway.job("etl")
    assert stored is not None
    assert stored["executor_config"] == {"command": "run-etl", "shell": "true", "env": "A=1,B=two"}
    assert (stored["schedule"], stored["timezone"], stored["retries"]) == ("0 0 7 * * *", "Asia/Tokyo", 2)
    assert stored["processors"] == {"log": {"forward": "true"}} and stored["tags"] == {"dc": "dc1"}

    page.get_by_role("link", name="Clone", exact=True).click()
    expect(page.get_by_label("Name", exact=True)).to_have_value("etl-copy")
    page.get_by_label("Name", exact=True).fill("etl-eu")
    page.get_by_label("Time zone").fill("Europe/Paris")
    page.get_by_role("button", name="Create job").click()
    expect(page).to_have_url(re.compile(r"#/jobs/etl-eu$"))
    clone = gateway.job("etl-eu")
    assert clone is not None
    assert clone["executor_config"] == stored["executor_config"]
    assert (clone["timezone"], clone["displayname"], clone["success_count"]) == (
        "Europe/Paris",
        "Nightly ETL (copy)",
        0,
    )


def test_watch_the_live_output_of_a_long_job_then_kill_it(gateway: Gateway, page: Page) -> None:
    gateway.create_job(**shell_job("slow", "i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo tick $i; sleep 0.2; done"))
    page.goto(gateway.url + "/ui/#/jobs/slow")
    actions(page).get_by_role("button", name="Run now").click()

    panel = page.locator("#output-panel")
    expect(panel.locator("#live-indicator")).to_be_visible()
    output = panel.locator("pre.output")
    expect(output).to_contain_text("tick 3")
    expect(output).to_contain_text("tick 15")  # still arriving, not a one-off snapshot
    expect(page.locator(".exec-table tbody tr").first).to_contain_text("Running")

    panel.get_by_role("button", name="Kill").click()
    dialog = page.get_by_role("dialog", name="Kill this execution?")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Kill").click()
    expect(panel.locator("#output-status")).to_contain_text("Killed", timeout=30_000)
    expect(panel.locator("#live-indicator")).to_be_hidden()
    expect(page.locator(".exec-table tbody tr").first).to_contain_text("Killed")
    (execution,) = gateway.wait_finished("slow")
    assert execution["status"] == "killed"


def test_toggle_then_delete_a_job_from_its_page(gateway: Gateway, page: Page) -> None:
    gateway.create_job(**shell_job("tidy", "true", schedule="@hourly"))
    page.goto(gateway.url + "/ui/#/jobs/tidy")
    buttons = actions(page)
    buttons.get_by_role("button", name="Disable").click()
    expect(buttons.get_by_role("button", name="Enable")).to_be_visible()
    expect(page.locator(".title-block")).to_contain_text("Disabled")
    expect(page.get_by_role("status").filter(has_text="is disabled")).to_have_count(1)
    assert (gateway.job("tidy") or {}).get("disabled") is True
    # Focus stays on the button that was pressed, now labelled for what it does next.
    expect(buttons.get_by_role("button", name="Enable")).to_be_focused()

    buttons.get_by_role("button", name="Enable").click()
    expect(buttons.get_by_role("button", name="Disable")).to_be_visible()
    assert (gateway.job("tidy") or {}).get("disabled") is False

    buttons.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog", name="Delete tidy?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert gateway.job("tidy") is not None

    buttons.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog", name="Delete tidy?").get_by_role("button", name="Delete job").click()
    expect(page).to_have_url(re.compile(r"#/jobs$"))
    expect(page.locator(".toast", has_text="Deleted tidy")).to_be_visible()
    wait_until(lambda: gateway.job("tidy") is None, 10, 0.1, "tidy deleted")


def test_jobs_list_pages_searches_sorts_and_acts_in_bulk_through_the_api(gateway: Gateway, page: Page) -> None:
    for i in range(30):
        gateway.create_job(name=f"job-{i:02}", schedule="@manually", executor="noop", metadata={"team": "ab"[i % 2]})
    list_queries: list[str] = []
    page.on("request", lambda r: list_queries.append(r.url) if re.search(r"/v1/jobs(\?|$)", r.url) else None)

    page.goto(gateway.url + "/ui/#/jobs")
    summary = page.locator("#jobs-summary")
    expect(summary).to_have_text("Showing 1–25 of 30 jobs")
    expect(page.locator("tbody tr[data-job]")).to_have_count(25)
    page.get_by_role("button", name="Next page").click()
    expect(summary).to_have_text("Showing 26–30 of 30 jobs")
    expect(page.get_by_role("button", name="Previous page")).to_be_enabled()
    expect(page.locator("tbody tr[data-job]").first).to_have_attribute("data-job", "job-25")

    page.get_by_label("Search").fill("job-1")
    expect(summary).to_have_text("Showing 1–10 of 10 jobs")
    page.get_by_role("button", name="Name", exact=True).click()  # already sorted by name: now descending
    expect(page.locator("tbody tr[data-job]").first).to_have_attribute("data-job", "job-19")
    expect(page.locator("th[aria-sort=descending]")).to_contain_text("Name")
    # Re-rendering the table keeps keyboard focus on the control that was used.
    expect(page.get_by_role("button", name="Name", exact=True)).to_be_focused()
    assert "sort=name" not in page.url and "order=DESC" in page.url and "q=job-1" in page.url

    page.get_by_label("Metadata").fill("team=b")
    expect(summary).to_have_text("Showing 1–5 of 5 jobs")
    page.get_by_label("Select every job on this page").check()
    bulk = page.get_by_role("region", name="Bulk actions")
    expect(bulk).to_contain_text("5 jobs selected")
    bulk.get_by_role("button", name="Disable").click()
    expect(page.locator(".toast").last).to_contain_text("Disabled: 5 jobs")
    wait_until(lambda: all((gateway.job(f"job-{i}") or {}).get("disabled") for i in (11, 13, 15, 17, 19)), 10)

    bulk.get_by_role("button", name="Run").click()
    expect(page.locator(".toast").last).to_contain_text("Runs requested: 5 jobs")
    gateway.wait_finished("job-11")

    bulk.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete 5 jobs").click()
    expect(page.locator(".toast").last).to_contain_text("Deleted: 5 jobs")
    expect(summary).to_have_text("No jobs to show")
    expect(page.get_by_text("No jobs match these filters")).to_be_visible()
    page.get_by_role("button", name="Clear filters").first.click()
    expect(summary).to_have_text("Showing 1–25 of 25 jobs")

    # Server-side paging only: the list never asked for every job.
    assert list_queries
    assert all("_end=" in url for url in list_queries), [u for u in list_queries if "_end=" not in u]


def test_dashboard_cluster_and_running_pages_show_the_cluster(gateway: Gateway, page: Page) -> None:
    gateway.create_job(**shell_job("works", "echo fine"))
    gateway.create_job(**shell_job("breaks", "echo broken >&2; exit 3"))
    gateway.create_job(**shell_job("idle", "true"))
    gateway.run("works")
    gateway.run("breaks")
    gateway.wait_finished("works")
    gateway.wait_finished("breaks")

    page.goto(gateway.url + "/ui/#/")
    for stat, value in (("all", "3"), ("success", "1"), ("failed", "1"), ("untriggered", "1"), ("running", "0")):
        expect(page.locator(f"[data-stat={stat}] .stat-value")).to_have_text(value)
    expect(page.get_by_role("region", name="Cluster")).to_contain_text("Leader")
    expect(page.get_by_role("region", name="Cluster")).to_contain_text("Healthy executors: 1 of 1")
    failures = page.get_by_role("region", name="Recent failures")
    expect(failures.get_by_role("link", name="breaks")).to_be_visible()
    expect(page.locator("svg.chart")).to_be_visible()
    expect(page.locator(".legend")).to_contain_text("Succeeded: 1")

    nav(page, "Cluster").click()
    expect(page.get_by_role("heading", level=1, name="Cluster")).to_be_focused()
    schedulers = page.get_by_role("region", name=re.compile("^Schedulers"))
    expect(schedulers.locator(".badge", has_text="Leader")).to_have_count(1)
    executors = page.get_by_role("region", name=re.compile("^Executors"))
    expect(executors.locator(".member")).to_have_count(1)
    expect(executors).to_contain_text("Healthy")
    expect(executors).to_contain_text("0 running")
    expect(page.get_by_role("region", name=re.compile("^Gateways")).locator(".member")).to_have_count(1)

    nav(page, "Running").click()
    expect(page.get_by_text("Nothing is running right now")).to_be_visible()

    page.goto(gateway.url + "/ui/#/jobs/breaks")
    row = page.locator(".exec-table tbody tr").first
    expect(row).to_contain_text("Failed")
    expect(row).to_contain_text("exit 3")
    row.get_by_role("button", name=re.compile("Output")).click()
    expect(page.locator("#output-panel pre.output")).to_contain_text("broken")


def test_keyboard_users_can_skip_to_content_navigate_and_operate_forms(gateway: Gateway, page: Page) -> None:
    page.goto(gateway.url + "/ui/#/")
    expect(page.get_by_role("heading", level=1, name="Dashboard")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()

    nav(page, "Jobs").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1, name="Jobs")).to_be_focused()

    page.goto(gateway.url + "/ui/#/jobs/new")
    add_tag = page.get_by_role("button", name="Add tag")
    add_tag.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Tag 1 key")).to_be_focused()
    page.keyboard.type("role")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Tag 1 value")).to_be_focused()
    page.get_by_role("button", name="Remove tag 1").press("Enter")
    expect(add_tag).to_be_focused()


def test_sign_in_with_a_token_and_the_role_decides_the_buttons(cluster: Cluster, browser: Browser) -> None:
    gateway = start_cluster(
        cluster, "--token", f"{ADMIN_TOKEN}:admin", "--token", f"{READ_TOKEN}:read", token=ADMIN_TOKEN
    )
    gateway.create_job(**shell_job("guarded", "echo guarded output"))
    gateway.run("guarded")
    gateway.wait_finished("guarded")
    context = open_context(browser)
    page = context.new_page()
    seen = watch(page)
    try:
        page.goto(gateway.url + "/ui/#/jobs/guarded")
        expect(page.get_by_role("heading", level=1, name="Sign in to cronbus")).to_be_visible()
        token = page.get_by_label("API token")
        expect(token).to_be_focused()
        token.fill("not-a-valid-token-at-all")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#token-error")).to_contain_text("not accepted")

        token.fill(READ_TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", level=1, name="guarded")).to_be_visible()
        expect(page.locator(".role-chip")).to_contain_text("Read only")
        expect(page.locator(".exec-table tbody tr")).to_have_count(1)
        for label in ("Run now", "Disable", "Delete", "Clear history"):
            expect(page.get_by_role("button", name=label, exact=True)).to_have_count(0)
        expect(page.get_by_role("link", name="Edit", exact=True)).to_have_count(0)
        page.get_by_role("button", name=re.compile("Output")).first.click()
        expect(page.locator("#output-panel pre.output")).to_contain_text("guarded output")
        nav(page, "Jobs").click()
        expect(page.locator("tbody tr[data-job]")).to_have_count(1)
        expect(page.get_by_role("link", name="New job")).to_have_count(0)
        expect(page.get_by_label("Run guarded now")).to_have_count(0)
        # The token lives in this tab's session storage only.
        assert page.evaluate("sessionStorage.getItem('cronbus.token')") == READ_TOKEN
        assert page.evaluate("localStorage.length") == 0

        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", level=1, name="Sign in to cronbus")).to_be_visible()
        page.get_by_label("API token").fill(ADMIN_TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator(".role-chip")).to_contain_text("Admin")
        expect(page.get_by_role("link", name="New job")).to_be_visible()
        page.get_by_role("link", name="guarded").click()
        expect(actions(page).get_by_role("button", name="Delete")).to_be_visible()
        # Live output with auth on: EventSource cannot send the header (the UI passes ?token=, and falls back
        # to polling the running executions when the gateway refuses that).
        gateway.create_job(
            **shell_job("ticker", "i=0; while [ $i -lt 150 ]; do i=$((i+1)); echo tick $i; sleep 0.2; done")
        )
        page.goto(gateway.url + "/ui/#/jobs/ticker")
        actions(page).get_by_role("button", name="Run now").click()
        expect(page.locator("#output-panel pre.output")).to_contain_text("tick 5")
        shoot(page, "live-output-signed-in-desktop-light")
        page.locator("#output-panel").get_by_role("button", name="Kill").click()
        page.get_by_role("dialog").get_by_role("button", name="Kill").click()
        expect(page.locator("#output-status")).to_contain_text("Killed", timeout=30_000)
    finally:
        context.close()
        gateway.http.close()
    assert not seen.errors, seen.errors
    assert not seen.foreign, seen.foreign

    for phone in (False, True):
        for dark in (False, True):
            context = open_context(browser, phone=phone, dark=dark)
            try:
                signin = context.new_page()
                signin.goto(gateway.url + "/ui/")
                expect(signin.get_by_role("heading", level=1, name="Sign in to cronbus")).to_be_visible()
                shoot(signin, f"sign-in-{'phone' if phone else 'desktop'}-{'dark' if dark else 'light'}")
            finally:
                context.close()


PAGES = [
    ("dashboard", "#/", "[data-stat=all] .stat-value >> text=/\\d/"),
    ("jobs", "#/jobs", "tbody tr[data-job]"),
    ("job", "#/jobs/report-daily", ".exec-table tbody tr[data-exec]"),
    ("output", "#/jobs/report-daily?exec={exec}", "#output-panel pre.output >> text=rows exported"),
    ("new-job", "#/jobs/new", "#job-name"),
    ("edit-job", "#/jobs/call-webhook/edit", "[data-executor=http]"),
    ("cluster", "#/executors", ".member"),
    ("running", "#/busy", ".busy-card"),
    ("executions", "#/executions?status=failed%2Ctimeout%2Ckilled&range=24h", ".all-execs-table tbody tr[data-exec]"),
]


def test_every_page_at_desktop_and_phone_width_in_light_and_dark(gateway: Gateway, browser: Browser) -> None:
    """Screenshots for people to look at (tests/artifacts/), and what a machine can check about the layout:
    nothing wider than a phone screen, and no script errors."""
    gateway.create_job(
        **shell_job(
            "report-daily",
            "echo exporting; echo 1200 rows exported",
            displayname="Daily sales report",
            schedule="0 30 6 * * 1-5",
            timezone="Europe/Berlin",
            owner="Data team",
            owner_email="data@example.com",
            metadata={"team": "data", "tier": "gold"},
        )
    )
    gateway.create_job(
        name="call-webhook",
        schedule="@every 1h",
        executor="http",
        executor_config={"method": "POST", "url": "http://127.0.0.1:9/hook", "headers": '["X-Token: abc"]'},
        tags={"dc": "dc1"},
    )
    # A chain under the report, so its page draws one: a child with a long name, and a grandchild.
    gateway.create_job(**shell_job("mail-the-daily-sales-report-to-every-regional-manager", "echo sent", schedule="",
                                   parent_job="report-daily"))  # fmt: skip
    gateway.create_job(**shell_job("archive", "echo done", schedule="",
                                   parent_job="mail-the-daily-sales-report-to-every-regional-manager"))  # fmt: skip
    gateway.create_job(**shell_job("long-export", "while true; do echo working; sleep 1; done"))
    gateway.create_job(**shell_job("flaky-sync", "echo 'connection refused' >&2; exit 7", schedule="@every 30m"))
    gateway.run("flaky-sync")
    gateway.wait_finished("flaky-sync")
    for i in range(12):
        gateway.create_job(name=f"cleanup-{i:02}", schedule=f"0 {i * 5} * * * *", executor="noop")
    gateway.run("report-daily")
    (execution,) = gateway.wait_finished("report-daily")
    gateway.run("long-export")
    wait_until(lambda: gateway.http.get("/v1/busy").json(), 20, 0.2, "long-export running")

    for phone in (False, True):
        for dark in (False, True):
            context = open_context(browser, phone=phone, dark=dark)
            page = context.new_page()
            seen = watch(page)
            mode = f"{'phone' if phone else 'desktop'}-{'dark' if dark else 'light'}"
            try:
                for name, route, ready in PAGES:
                    page.goto(f"{gateway.url}/ui/{route.format(exec=execution['id'])}")
                    page.locator(ready).first.wait_for()
                    shoot(page, f"{name}-{mode}")
                    if phone:
                        width = page.evaluate("document.documentElement.scrollWidth")
                        assert width <= PHONE["width"], f"{name} is {width}px wide on a {PHONE['width']}px phone"
            finally:
                context.close()
            assert not seen.errors, (mode, seen.errors)
            assert not seen.foreign, (mode, seen.foreign)
    gateway.http.post(f"/v1/jobs/long-export/executions/{gateway.http.get('/v1/busy').json()[0]['id']}/kill")


def test_live_output_follows_a_run_opened_while_it_is_still_pending(
    cluster: Cluster, browser: Browser, tmp_path: Path
) -> None:
    """An executor with room for one run holds a second one pending (the leader waits for a free slot), so the
    test opens its live output before it starts: the panel shows it pending, then follows it from its first line
    to its end, and a run shorter than the executor's start report still shows its output when it ends."""
    gateway = start_cluster(cluster, executor_args=("--capacity", "1"))
    release = tmp_path / "release"
    gateway.create_job(**shell_job("blocker", f"while [ ! -e {release} ]; do sleep 0.05; done"))
    gateway.create_job(
        **shell_job(
            "follow",
            "echo first line; i=0; while [ $i -lt 15 ]; do i=$((i+1)); echo step $i; sleep 0.2; done; echo last line",
            displayname="Follow a run that has not started yet, with a long display name to see how it wraps",
        )
    )
    gateway.create_job(**shell_job("quick", "echo quick output"))
    context = open_context(browser)
    page = context.new_page()
    seen = watch(page)
    try:
        for name, last in (("follow", "last line"), ("quick", "quick output")):
            gateway.run("blocker")
            wait_until(lambda: gateway.http.get("/v1/busy").json(), 20, 0.1, "blocker running")
            page.goto(f"{gateway.url}/ui/#/jobs/{name}")
            actions(page).get_by_role("button", name="Run now").click()
            row = page.locator(".exec-table tbody tr[data-exec]").first
            expect(row).to_contain_text("Pending")
            panel = page.locator("#output-panel")
            if not panel.is_visible():
                row.get_by_role("button", name="Live output").click()
            expect(panel).to_be_visible()
            expect(row.get_by_role("button", name="Live output")).to_have_attribute("aria-expanded", "true")
            # The panel sits right under the row it belongs to.
            under = page.locator(".exec-table tr[data-exec]").first.locator("xpath=following-sibling::tr[1]")
            expect(under.locator("#output-panel")).to_be_visible()
            expect(panel.locator("#output-status")).to_contain_text("Pending")
            expect(panel.locator("#live-indicator")).to_be_visible()
            if name == "follow":
                shoot(page, "live-output-pending-desktop-light")
            release.touch()
            output = panel.locator("pre.output")
            if name == "follow":
                expect(panel.locator("#output-status")).to_contain_text("Running")
                expect(output).to_contain_text("first line")
                expect(output).to_contain_text("step 3")
                expect(output).not_to_contain_text("last line")  # followed live, not shown at the end only
            expect(output).to_contain_text(last, timeout=30_000)
            expect(panel.locator("#output-status")).to_contain_text("Succeeded", timeout=30_000)
            expect(panel.locator("#live-indicator")).to_be_hidden()
            expect(panel).to_contain_text("exit code 0")
            if name == "follow":
                assert output.inner_text().startswith("first line")
                shoot(page, "live-output-followed-desktop-light")
            release.unlink()
            gateway.wait_finished("blocker", count=1 if name == "follow" else 2)
    finally:
        context.close()
        gateway.http.close()
    assert not seen.errors, seen.errors


def test_pause_submissions_with_a_note_everyone_sees_until_resumed(gateway: Gateway, browser: Browser) -> None:
    note = "Consul upgrade in progress: please do not create or change jobs until it is done, back by 15:00 UTC."
    admin = open_context(browser)
    other = open_context(browser, dark=True)
    try:
        page = admin.new_page()
        seen = watch(page)
        page.goto(gateway.url + "/ui/#/executors")
        page.get_by_role("button", name="Pause submissions").click()
        dialog = page.get_by_role("dialog", name="Pause job submissions?")
        dialog.get_by_label("Why").fill(note)
        dialog.get_by_label("Who").fill("Ana from ops")
        dialog.get_by_role("button", name="Pause submissions").click()
        banner = page.locator("#pause-banner")
        expect(banner).to_contain_text("New job submissions are paused")
        expect(banner).to_contain_text("by Ana from ops")
        expect(banner).to_contain_text(note)
        state = gateway.http.get("/v1/pause").json()
        assert (state["paused"], state["note"], state["paused_by"]) == (True, note, "Ana from ops")
        assert state["paused_at"]
        expect(page.get_by_role("button", name="Resume submissions")).to_be_visible()
        shoot(page, "paused-cluster-desktop-light")

        # Someone else, on any page, sees who paused, when and why.
        viewer = other.new_page()
        other_seen = watch(viewer)
        viewer.goto(gateway.url + "/ui/#/jobs")
        viewer_banner = viewer.locator("#pause-banner")
        expect(viewer_banner).to_contain_text(note)
        expect(viewer_banner).to_contain_text("Ana from ops")
        expect(viewer_banner.locator("time")).to_have_text(re.compile(r"now|second"))
        viewer.goto(gateway.url + "/ui/#/jobs/new")
        warning = viewer.locator("#paused-warning")
        expect(warning).to_contain_text("saving will be refused")
        expect(warning).to_contain_text(note)
        shoot(viewer, "paused-new-job-desktop-dark")

        page.goto(gateway.url + "/ui/#/")
        expect(banner).to_contain_text(note)
        banner.get_by_role("button", name="Resume").click()
        expect(banner).to_be_hidden()
        assert gateway.http.get("/v1/pause").json()["paused"] is False
        viewer.reload()
        expect(viewer.get_by_role("heading", level=1, name="New job")).to_be_visible()
        expect(viewer.locator("#paused-warning")).to_be_hidden()
        expect(viewer.locator("#pause-banner")).to_be_hidden()
    finally:
        admin.close()
        other.close()
    assert not seen.errors and not other_seen.errors, (seen.errors, other_seen.errors)


def test_a_dashboard_refresh_costs_four_requests_whatever_the_number_of_jobs(gateway: Gateway, page: Page) -> None:
    """The totals and the chart come from GET /v1/stats (counted by the cluster), so a refresh is: stats, the
    members (the leader among them), the recent failures and the pause state; never one request per job, and none
    that answers 404. The jobs list refreshes with one page of jobs and the pause state."""
    gateway.create_job(**shell_job("works", "echo fine"))
    gateway.create_job(**shell_job("breaks", "exit 3"))
    for i in range(60):
        gateway.create_job(name=f"bulk-{i:02}", schedule="@manually", executor="noop", disabled=i % 10 == 0)
    gateway.run("works")
    gateway.run("breaks")
    gateway.wait_finished("works")
    gateway.wait_finished("breaks")
    started: list[str] = []
    finished: list[str] = []
    refused: list[str] = []
    page.on("request", lambda r: started.append(r.url) if "/v1" in r.url else None)
    page.on("requestfinished", lambda r: finished.append(r.url) if "/v1" in r.url else None)
    page.on("requestfailed", lambda r: finished.append(r.url) if "/v1" in r.url else None)
    page.on("response", lambda r: refused.append(r.url) if r.status >= 400 and "/whoami" not in r.url else None)

    def one_refresh() -> list[str]:
        """The requests of one refresh, started as a hidden tab becoming visible starts one."""
        # The sync API hands over the page's events during its calls: each check makes one (a round trip).
        settled = lambda: page.evaluate("0") == 0 and bool(started) and len(finished) == len(started)  # noqa: E731
        wait_until(settled, 20, 0.05, "the page's requests to finish")
        started.clear()
        finished.clear()
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
        wait_until(settled, 20, 0.05, "the refresh's requests to finish")
        return sorted(urlsplit(url).path for url in started)

    page.goto(gateway.url + "/ui/#/")
    for stat, value in (("all", "62"), ("success", "1"), ("failed", "1"), ("untriggered", "60"), ("running", "0")):
        expect(page.locator(f"[data-stat={stat}] .stat-value")).to_have_text(value)
    expect(page.locator("[data-stat=all] .stat-note")).to_have_text("6 disabled")
    expect(page.locator(".legend")).to_contain_text("Succeeded: 1")
    expect(page.locator(".legend")).to_contain_text("Failed, killed or timed out: 1")
    expect(page.get_by_role("region", name="Cluster")).to_contain_text("Leader")
    assert one_refresh() == ["/v1/jobs", "/v1/members", "/v1/pause", "/v1/stats"]
    for i in range(60, 90):
        gateway.create_job(name=f"bulk-{i:02}", schedule="@manually", executor="noop")
    assert one_refresh() == ["/v1/jobs", "/v1/members", "/v1/pause", "/v1/stats"]
    expect(page.locator("[data-stat=all] .stat-value")).to_have_text("92")
    shoot(page, "dashboard-many-jobs-desktop-light")

    page.goto(gateway.url + "/ui/#/jobs")
    expect(page.locator("#jobs-summary")).to_have_text("Showing 1–25 of 92 jobs")
    assert one_refresh() == ["/v1/jobs", "/v1/pause"]
    gateway.create_job(name="aaa-new", schedule="@manually", executor="noop")
    expect(page.locator("#jobs-summary")).to_have_text("Showing 1–25 of 93 jobs", timeout=15_000)
    assert not refused, refused


def test_small_things_parent_delete_child_badge_future_times_and_a_bad_time_zone(gateway: Gateway, page: Page) -> None:
    gateway.create_job(**shell_job("etl-parent", "true"))
    gateway.create_job(**shell_job("etl-child", "true", schedule="", parent_job="etl-parent"))

    # A job with children: the dialog says why it cannot be deleted and offers no button that would fail (409).
    page.goto(gateway.url + "/ui/#/jobs/etl-parent")
    actions(page).get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog", name="etl-parent cannot be deleted yet")
    expect(dialog).to_contain_text("Delete them first")
    expect(dialog.get_by_role("link", name="etl-child")).to_be_visible()
    expect(dialog.get_by_role("button", name=re.compile("Delete"))).to_have_count(0)
    shoot(page, "delete-parent-dialog-desktop-light")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    assert gateway.job("etl-parent") is not None

    # "child of" and the parent's name are apart on screen.
    page.goto(gateway.url + "/ui/#/jobs/etl-child")
    chip = page.locator(".title-block .chip", has_text="child of")
    expect(chip.get_by_role("link", name="etl-parent")).to_be_visible()
    gap = chip.evaluate(
        "chip => { const link = chip.querySelector('a'); const r = document.createRange();"
        " r.setStart(chip, 0); r.setEndBefore(link);"
        " return link.getBoundingClientRect().left - r.getBoundingClientRect().right; }"
    )
    assert gap >= 3, f"'child of' and the link are {gap}px apart"

    # A time a few seconds ahead reads "in N s"; one just past reads "just now".
    rel = "(ms) => import('./dom.js').then((m) => m.relTime(new Date(Date.now() + ms)))"
    assert page.evaluate(rel, 5_200) == "in 5 s"
    assert page.evaluate(rel, 2_200) == "in 2 s"
    assert page.evaluate(rel, 42_200) == "in 42 s"
    assert page.evaluate(rel, -2_000) == "just now"
    assert page.evaluate(rel, 3 * 60_000 + 200) == "in 3 minutes"

    # A time zone nobody knows is the time zone's error, not the schedule's.
    page.goto(gateway.url + "/ui/#/jobs/new")
    page.get_by_label("Name", exact=True).fill("zoned")
    schedule = page.get_by_role("textbox", name="Schedule", exact=True)
    schedule.fill("0 3 * * *")
    page.get_by_label("Command").fill("true")
    page.get_by_label("Time zone").fill("Mars/Olympus_Mons")
    expect(page.locator("#schedule-preview")).to_contain_text("No preview until the time zone is valid")
    expect(page.locator("#job-timezone-error")).to_contain_text("unknown time zone")
    expect(page.locator("#job-schedule-error")).to_be_hidden()
    expect(schedule).not_to_have_attribute("aria-invalid", "true")
    page.get_by_role("button", name="Create job").click()
    summary = page.locator(".job-form > .alert-bad")
    expect(summary).to_contain_text("Time zone: unknown time zone 'Mars/Olympus_Mons'")
    expect(summary).not_to_contain_text("Schedule")
    shoot(page, "bad-time-zone-desktop-light")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    expect(page.locator("#job-timezone-error")).to_be_hidden()
    page.get_by_role("button", name="Create job").click()
    expect(page).to_have_url(re.compile(r"#/jobs/zoned$"))


def test_find_every_failed_run_of_the_last_day_across_jobs_and_open_its_output(
    gateway: Gateway, page: Page, tmp_path: Path
) -> None:
    """A job that failed once and then succeeded reads "Succeeded" everywhere that shows jobs: the executions view
    across jobs still finds its failed run, by status, job, executor and text in the output, and opens it."""
    marker = tmp_path / "backup-ran-once"
    backup = f"if [ -e {marker} ]; then echo backup done; else touch {marker}; echo 'ERROR: disk full' >&2; exit 3; fi"
    gateway.create_job(**shell_job("nightly-backup", backup))
    gateway.create_job(**shell_job("sync-crm", "echo 'connection refused by crm.internal:443' >&2; exit 7"))
    gateway.create_job(**shell_job("report", "echo 1200 rows exported"))
    for name, runs in (("nightly-backup", 2), ("sync-crm", 1), ("report", 1)):
        for count in range(1, runs + 1):
            gateway.run(name)
            gateway.wait_finished(name, count)
    assert gateway.job("nightly-backup")["status"] == "success"  # type: ignore[index]

    page.goto(f"{gateway.url}/ui/#/")
    page.locator("[data-key=failed-runs]").click()
    expect(page.get_by_role("heading", level=1, name="Executions")).to_be_visible()
    expect(nav(page, "Executions")).to_have_attribute("aria-current", "page")
    expect(page.locator("#exec-range")).to_have_value("24h")
    rows = page.locator(".all-execs-table tbody tr[data-exec]")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("sync-crm")
    expect(rows.nth(0)).to_contain_text("exit 7")
    expect(rows.nth(1)).to_contain_text("nightly-backup")
    expect(rows.nth(1)).to_contain_text("ERROR: disk full")  # the output's last line says why
    expect(page.locator("#execs-summary")).to_have_text("2 executions")
    shoot(page, "executions-failed-desktop-light")

    page.locator("#exec-q").fill("REFUSED")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("sync-crm")
    page.locator("#exec-q").fill("")
    page.locator("#exec-job").fill("nightly-backup")
    expect(rows).to_have_count(1)
    page.locator("#exec-status").select_option("")
    expect(rows).to_have_count(2)  # its failure and its success
    page.locator("#exec-node").fill("no-such-executor")
    expect(page.locator(".all-execs-table")).to_contain_text("No execution matches")
    page.locator("#exec-node").fill("")
    page.locator("#exec-status").select_option("failed,timeout,killed")
    expect(rows).to_have_count(1)
    expect(page).to_have_url(re.compile(r"job=nightly-backup"))  # the filters are in the link

    rows.first.get_by_role("link", name=re.compile("^Output")).click()
    panel = page.locator("#output-panel")
    expect(panel.locator("pre.output")).to_contain_text("ERROR: disk full")
    expect(panel.locator("#output-status")).to_contain_text("Failed")

    # The job's own executions filter by status too.
    exec_rows = page.locator(".exec-table tbody tr[data-exec]")
    expect(exec_rows).to_have_count(2)
    page.locator("#exec-status-filter").select_option("success")
    expect(exec_rows).to_have_count(1)
    expect(exec_rows.first).to_contain_text("Succeeded")
    page.locator("#exec-status-filter").select_option("failed,timeout,killed")
    expect(exec_rows).to_have_count(1)
    expect(exec_rows.first).to_contain_text("Failed")
    expect(page).to_have_url(re.compile(r"estatus=failed%2Ctimeout%2Ckilled"))
    shoot(page, "job-executions-failed-desktop-light")


def test_counts_and_icons_go_by_the_last_finished_run_not_by_runs_sent_ahead(gateway: Gateway, page: Page) -> None:
    """Jobs every second have a run sent to the executor ahead of each slot: they are not `running` for it, so the
    dashboard says they succeeded at every refresh, and the jobs list shows their success; a job whose process runs
    is running (and still counted by how its last run went)."""
    for name in ("tick-a", "tick-b", "tick-c"):
        gateway.create_job(name=name, schedule="@every 1s", executor="noop")
        gateway.wait_finished(name)
    gateway.create_job(**shell_job("long", "sleep 60"))
    gateway.run("long")
    wait_until(lambda: (gateway.job("long") or {}).get("status") == "running", 20, 0.1, "the long run started")
    pending: list[str] = []
    page.on("request", lambda r: pending.append(r.url) if "/v1/stats" in r.url else None)
    page.on("requestfinished", lambda r: pending.remove(r.url) if r.url in pending else None)
    page.goto(gateway.url + "/ui/#/")
    expect(page.locator("[data-stat=success] .stat-value")).to_have_text("3")
    seen = []
    for _ in range(12):  # refreshes at every phase of the one-second slots
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
        wait_until(lambda: page.evaluate("0") == 0 and not pending, 20, 0.02, "the refresh's stats")
        seen.append(tuple(page.locator(f"[data-stat={s}] .stat-value").inner_text() for s in ("success", "running")))
    assert set(seen) == {("3", "1")}, seen  # the long job is running, and never triggered before
    shoot(page, "dashboard-jobs-every-second")
    page.on("request", lambda r: pending.append(r.url) if "/v1/jobs?" in r.url else None)
    page.goto(gateway.url + "/ui/#/jobs")
    expect(page.locator("tr[data-job=long] [data-status=running]")).to_be_visible()
    expect(page.locator("tr[data-job^=tick] [data-status=success]")).to_have_count(3)
    for _ in range(8):
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
        wait_until(lambda: page.evaluate("0") == 0 and not pending, 20, 0.02, "the refresh's jobs")
        assert page.locator("tr[data-job^=tick] [data-status=running]").count() == 0
        assert page.locator("tr[data-job^=tick] [data-status=success]").count() == 3


def test_the_lists_of_executions_page_newer_and_older(gateway: Gateway, page: Page) -> None:
    """The job page shows 20 executions a page, the Executions page 50: each pages on to the oldest and back."""
    gateway.create_job(name="many", schedule="@manually", executor="noop")
    for _ in range(51):
        gateway.run("many")
    gateway.wait_finished("many", 51)
    for path, rows, pages, last in (("#/jobs/many", ".exec-table tbody tr", 3, 11), ("#/executions", "tbody tr", 2, 1)):
        page.goto(gateway.url + "/ui/" + path)
        pager = page.get_by_role("navigation", name="Pages of executions")
        expect(pager).to_contain_text(f"Page 1 of {pages}")
        expect(pager.get_by_role("button", name="Newer executions")).to_be_disabled()
        for number in range(2, pages + 1):
            pager.get_by_role("button", name="Older executions").click()
            expect(pager).to_contain_text(f"Page {number} of {pages}")
        expect(page.locator(rows)).to_have_count(last)
        expect(pager.get_by_role("button", name="Older executions")).to_be_disabled()
        newer = pager.get_by_role("button", name="Newer executions")
        newer.focus()
        page.keyboard.press("Enter")  # a keyboard user's focus stays on the pager's button as the page changes
        expect(pager).to_contain_text(f"Page {pages - 1} of {pages}")
        # On the first page "Newer" is disabled: the focus moves to "Older", never to the page.
        expect(
            pager.get_by_role("button", name="Older executions" if pages == 2 else "Newer executions")
        ).to_be_focused()


def test_a_job_page_draws_its_chain_and_a_chart_of_its_recent_runs(
    gateway: Gateway, page: Page, tmp_path: Path
) -> None:
    """The chain a job belongs to is drawn from its first job down, the job marked; the chart has a bar per
    finished run, coloured by outcome, and says what it shows to a screen reader."""
    flag = tmp_path / "flag"
    # Fails, then succeeds, then fails...: the flag file flips at each run.
    gateway.create_job(
        **shell_job("extract", f"if [ -e {flag} ]; then rm {flag}; else touch {flag}; exit 1; fi; sleep 0.3")
    )
    gateway.create_job(**shell_job("transform", "echo t", schedule="", parent_job="extract", trigger_on="always"))
    gateway.create_job(**shell_job("load", "echo l", schedule="", parent_job="transform"))
    gateway.create_job(**shell_job("report", "echo r", schedule="", parent_job="extract", trigger_on="failure"))
    for count in range(1, 5):
        gateway.run("extract")
        gateway.wait_finished("extract", count)
    page.goto(gateway.url + "/ui/#/jobs/extract")
    runs = page.get_by_role("region", name="Recent runs")
    expect(runs.locator("g[data-outcome=bad]")).to_have_count(2)
    expect(runs.locator("g[data-outcome=ok]")).to_have_count(2)
    expect(runs.get_by_role("img")).to_have_attribute(
        "aria-label", re.compile(r"^The last 4 runs: 2 succeeded, 2 failed")
    )
    expect(runs.locator(".legend")).to_contain_text("Succeeded: 2")
    shoot(page, "job-recent-runs-and-chain")

    page.goto(gateway.url + "/ui/#/jobs/transform")
    chain = page.get_by_role("region", name="Chain")
    tree = chain.get_by_role("list", name="Chain of 4 jobs, from extract")
    expect(tree).to_be_visible()
    root = tree.locator(":scope > li")
    expect(root.locator(":scope > .chain-node")).to_contain_text("extract")
    expect(root.locator(":scope > ul > li > .chain-node")).to_have_text([re.compile("report"), re.compile("transform")])
    expect(chain.locator("[data-chain-job=load]")).to_contain_text("after success")
    expect(chain.locator("[aria-current=page]")).to_have_text("transform")
    chain.get_by_role("link", name="load").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("load")
    page.goto(gateway.url + "/ui/#/jobs/extract")
    expect(page.get_by_role("region", name="Recent runs").locator("g[data-outcome]")).to_have_count(4)
    gateway.create_job(name="alone", schedule="@manually", executor="noop")
    page.goto(gateway.url + "/ui/#/jobs/alone")
    expect(page.get_by_role("region", name="Recent runs")).to_contain_text("No finished run yet")
    expect(page.get_by_role("region", name="Chain")).to_be_hidden()


def test_a_job_that_keeps_failing_disables_itself_and_its_page_says_why(gateway: Gateway, page: Page) -> None:
    gateway.create_job(**shell_job("flaps", "echo broken; exit 3", schedule="@every 1s", disable_after_failures=2))
    page.goto(gateway.url + "/ui/#/jobs/flaps")
    reason = page.locator("[data-key=disabled-reason]")
    expect(reason).to_contain_text(
        re.compile(r"Disabled by the cluster after 2 failed runs in a row \(the last: flaps\.\S+, failed\)\. Enable"),
        timeout=20_000,
    )
    expect(page.locator(".job-head .badges")).to_contain_text("Disabled")
    expect(page.get_by_role("region", name="Definition")).to_contain_text("after 2 failed runs in a row")
    shoot(page, "job-disabled-after-failures")
    # The cause fixed (the job still disabled), then enabled: it stays enabled.
    gateway.create_job(
        **shell_job("flaps", "echo fixed", schedule="@every 1s", disable_after_failures=2, disabled=True)
    )
    expect(page.get_by_role("region", name="Definition")).to_contain_text("echo fixed")
    actions(page).get_by_role("button", name="Enable").click()
    expect(reason).to_have_count(0)
    expect(page.locator(".job-head .badges")).to_contain_text("Enabled")
    page.goto(gateway.url + "/ui/#/jobs/flaps/edit")
    field = page.get_by_label("Disable after failures")
    expect(field).to_have_value("2")
    field.fill("1001")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#job-disable-after-error")).to_have_text("A whole number from 0 (never) to 1000.")
    field.fill("0")
    page.get_by_role("button", name="Save changes").click()
    wait_until(lambda: (gateway.job("flaps") or {}).get("disable_after_failures") == 0, 10, 0.1, "the setting saved")


VOLUME_JOBS = 100_000


def _store_jobs(consul: DevAgent, count: int) -> None:
    """`count` hourly noop jobs written straight to Consul, 64 operations a transaction (as a restore writes them):
    none is due while the test runs."""
    created = now_utc()
    names = [f"bulk-{i:06}" for i in range(count)]
    for start in range(0, count, MAX_TXN_OPS):
        ops = [
            {"KV": {"Verb": "set", "Key": keys.job(name), "Value": base64.b64encode(encode(definition(
                Job(name=name, schedule="@every 1h", executor="noop", created_at=created)))).decode()}}
            for name in names[start : start + MAX_TXN_OPS]
        ]  # fmt: skip
        request = urllib.request.Request(f"http://{consul.address}/v1/txn", data=json.dumps(ops).encode(), method="PUT")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200


def test_the_pages_hold_100_000_jobs_and_a_run_with_256_kb_of_output(
    cluster: Cluster, fresh_consul: DevAgent, browser: Browser
) -> None:
    """Screenshots at volume, desktop and phone: the dashboard, the jobs list, the Executions page and a job's page
    with the last 256 000 bytes of a bigger output; nothing wider than the screen, no script error."""
    _store_jobs(fresh_consul, VOLUME_JOBS)
    gateway = start_cluster(cluster)
    try:
        # 262 144 characters of base64 in lines of 200, then a last line: the record keeps the last 256 000 bytes.
        gateway.create_job(**shell_job("big-output", "head -c 196608 /dev/urandom | base64 -w 200; echo the end"))
        # The leader takes a while to plan 100 000 jobs: until then a run is refused (503) and nothing is launched.
        # (A request the busy leader answered too late may have launched a run too: there may be two.)
        ran = lambda: gateway.http.post("/v1/jobs/big-output/run").status_code == 202  # noqa: E731
        wait_until(ran, 120, 0.5, "the leader to take a run with 100 000 jobs stored")
        execution = gateway.wait_finished("big-output")[0]
        total = f"{VOLUME_JOBS + 1:,}"
        for phone in (False, True):
            context = open_context(browser, phone=phone)
            page = context.new_page()
            seen = watch(page)
            mode = "phone" if phone else "desktop"
            try:
                page.goto(gateway.url + "/ui/#/")
                expect(page.locator("[data-stat=all] .stat-value")).to_have_text(total, timeout=30_000)
                expect(page.get_by_role("region", name="Cluster")).to_contain_text("Leader")
                expect(page.get_by_role("region", name="Recent failures")).to_contain_text("No failures")
                shoot(page, f"volume-dashboard-{mode}")
                page.goto(gateway.url + "/ui/#/jobs")
                expect(page.locator("#jobs-summary")).to_have_text(f"Showing 1–25 of {total} jobs")
                shoot(page, f"volume-jobs-{mode}")
                page.goto(gateway.url + "/ui/#/executions")
                expect(page.locator(".all-execs-table tbody tr[data-exec] .output-snippet").first).to_have_text(
                    "the end"
                )
                shoot(page, f"volume-executions-{mode}")
                page.goto(gateway.url + f"/ui/#/jobs/big-output?exec={execution['id']}")
                output = page.locator("#output-panel pre.output")
                expect(output).to_contain_text("the end")
                assert 255_000 < len(output.inner_text()) <= 256_000
                shoot(page, f"volume-output-{mode}")
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= (PHONE if phone else DESKTOP)["width"], f"{mode}: the page is {width}px wide"
            finally:
                context.close()
            assert not seen.errors, (mode, seen.errors)
    finally:
        gateway.http.close()
