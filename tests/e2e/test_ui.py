"""The web UI in a real browser against a real cluster: forms, live output, kill, list actions, sign-in, layout."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, Locator, Page, expect

from tests.e2e.conftest import (
    ADMIN_TOKEN,
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
