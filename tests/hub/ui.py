#!/usr/bin/env python3
"""The hub's web page in Chromium, with Python Playwright (tests/hub_ui.rs).

Usage: ui.py SPEC, SPEC a JSON object: url, user, password, site, finished
(a finished job's id), finished_name (its friendly_name), bad_paths (its
failed files as the page shows them), cancel_js and cancel_nojs (two
running jobs' ids), signals (a directory: the file `dequeuing` is written
there once the page shows a cancelled job DEQUEUING, for the test to start
an agent that ends it), screenshots (a directory), chromium (the browser).

It checks, with JavaScript: log in (after a refused one), the jobs list,
the job page (task-stats bar, failed items), health, the workflow editor,
cancel (DEQUEUING at once, then CANCELLED by the page's own refresh, not a
reload), that POSTs without the session's CSRF token are refused (403),
and that no page logs a console error or has a request fail; without
JavaScript: log in, the jobs list, the job page, cancel. It prints a JSON
report on stdout; any failed check exits non-zero with the reason.
"""
import json
import os
import re
import sys
import time

from playwright.sync_api import expect, sync_playwright

spec = json.loads(sys.argv[1])
url = spec["url"]
shots = spec["screenshots"]
problems = []
# Answers a check provokes on purpose (a refused log in, a refused
# cancel): not problems.
expected_status = set()


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def watch(page, label):
    """Records console errors, page errors, failed requests and error
    answers nobody asked for."""

    def console(m):
        if m.type in ("error", "warning"):
            if any(f"status of {s}" in m.text for s in expected_status):
                return
            problems.append(f"{label}: console {m.type}: {m.text} (at {page.url})")

    def response(r):
        if r.status >= 400 and (r.status, r.url.split("?")[0]) not in expected_pairs:
            problems.append(f"{label}: HTTP {r.status} for {r.request.method} {r.url}")

    page.on("console", console)
    page.on("pageerror", lambda e: problems.append(f"{label}: page error: {e}"))
    def failed(r):
        # A request cut short by the page moving on (the icon, while a
        # click navigates) is not a failure of the hub.
        if r.failure != "net::ERR_ABORTED":
            problems.append(f"{label}: request failed: {r.url} {r.failure}")

    page.on("requestfailed", failed)
    page.on("response", response)


expected_pairs = set()


def expect_status(status, path):
    expected_status.add(status)
    expected_pairs.add((status, url + path))


def login(page, next_path):
    page.goto(url + next_path)
    assert "/ui/login/" in page.url, page.url
    page.get_by_test_id("login-username").fill(spec["user"])
    page.get_by_test_id("login-password").fill(spec["password"])
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(url + next_path)


report = {}
finished = spec["finished"]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=spec["chromium"], args=["--no-sandbox"])

    # ------------------------------------------------------------------
    # With JavaScript.
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    watch(page, "js")

    # A page asked for without a session: the log in page, then back.
    page.goto(f"{url}/ui/jobs/{finished}/?tab=failed")
    assert page.url.startswith(f"{url}/ui/login/?next="), page.url
    expect_status(401, "/ui/login/")
    page.get_by_test_id("login-username").fill(spec["user"])
    page.get_by_test_id("login-password").fill("not the password")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("login-error")).to_have_text("Wrong username or password.")
    expect(page.get_by_test_id("login-username")).to_have_value(spec["user"])
    page.get_by_test_id("login-password").fill(spec["password"])
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(f"{url}/ui/jobs/{finished}/?tab=failed")
    cookies = {c["name"]: c for c in ctx.cookies()}
    for name in ("ferry_access", "ferry_refresh"):
        c = cookies[name]
        assert c["httpOnly"] and c["sameSite"] == "Strict" and c["path"] == "/", c
    # Scripts cannot read them.
    assert "ferry_" not in page.evaluate("document.cookie")

    # The jobs list.
    page.get_by_test_id("nav-jobs").click()
    page.wait_for_url(f"{url}/ui/jobs/")
    link = page.get_by_test_id(f"job-link-{finished}")
    expect(link).to_have_text(spec["finished_name"])
    expect(page.get_by_test_id(f"job-state-{finished}")).to_have_text("FAILURE")
    expect(page.get_by_test_id(f"job-state-{spec['cancel_js']}")).to_have_text(re.compile("PENDING|STARTED"))
    assert page.get_by_test_id(f"job-progress-{finished}").get_attribute("value") == "100"
    # The rows refresh themselves (htmx, every 5 s).
    with page.expect_response(lambda r: "/ui/jobs/rows/" in r.url, timeout=12_000) as rows:
        pass
    assert rows.value.status == 200
    expect(page.get_by_test_id(f"job-link-{finished}")).to_have_text(spec["finished_name"])
    # Filters are a GET form.
    page.get_by_test_id("filter-state").select_option("FAILURE")
    page.get_by_test_id("filter-apply").click()
    page.wait_for_url(re.compile(r".*/ui/jobs/\?state=FAILURE"))
    expect(page.get_by_test_id(f"job-row-{finished}")).to_be_visible()
    expect(page.get_by_test_id(f"job-row-{spec['cancel_js']}")).to_have_count(0)
    page.get_by_test_id("filter-clear").click()
    page.wait_for_url(f"{url}/ui/jobs/")
    page.screenshot(path=os.path.join(shots, "jobs.png"), full_page=True)

    # The finished job: task stats, file counts, failed items.
    page.get_by_test_id(f"job-link-{finished}").click()
    page.wait_for_url(f"{url}/ui/jobs/{finished}/")
    expect(page.get_by_test_id("job-state")).to_have_text("FAILURE")
    expect(page.get_by_test_id("task-stats-bar")).to_be_visible()
    expect(page.get_by_test_id("task-stats-success")).to_have_count(1)
    expect(page.get_by_test_id("task-stats-legend-success")).to_contain_text("Success")
    for key in ("success", "error", "skipped", "aborted", "cancelled", "failure", "started", "pending"):
        expect(page.get_by_test_id(f"task-stats-legend-{key}")).to_have_count(1)
    expect(page.get_by_test_id("files-failures")).to_have_text("2")
    expect(page.get_by_test_id("files-found")).to_have_text("32")
    expect(page.get_by_test_id("job-action-delete")).to_be_visible()
    expect(page.get_by_test_id("job-action-resubmit")).to_be_visible()
    expect(page.get_by_test_id("job-action-resubmit-failed")).to_be_visible()
    expect(page.get_by_test_id("job-action-cancel")).to_have_count(0)
    expect(page.get_by_test_id("job-action-pause")).to_have_count(0)
    page.get_by_test_id("tab-completed").click()
    expect(page.get_by_test_id("completed-note")).to_contain_text("records failed and aborted files only")
    page.get_by_test_id("tab-failed").click()
    page.wait_for_url(f"{url}/ui/jobs/{finished}/?tab=failed")
    paths = page.get_by_test_id("failed-path").all_text_contents()
    assert sorted(paths) == sorted(spec["bad_paths"]), (paths, spec["bad_paths"])
    messages = page.get_by_test_id("failed-message").all_text_contents()
    assert len(messages) == 2 and all("Permission denied" in m for m in messages), messages
    kinds = page.get_by_test_id("failed-category").all_text_contents()
    assert kinds == ["permanent", "permanent"], kinds
    # A job ended does not poll.
    assert page.get_by_test_id("job-live").get_attribute("hx-trigger") is None
    page.screenshot(path=os.path.join(shots, "job.png"), full_page=True)
    page.get_by_test_id("tab-tasks").click()
    expect(page.locator("[data-testid^=task-row-]").first).to_be_visible()

    # Health.
    page.get_by_test_id("nav-health").click()
    page.wait_for_url(f"{url}/ui/health/")
    expect(page.get_by_test_id(f"site-{spec['site']}")).to_be_visible()
    expect(page.get_by_test_id(f"node-ferry@{spec['site']}-n1")).to_contain_text("online")
    expect(page.get_by_test_id("broker-state")).to_have_text("connected")
    page.screenshot(path=os.path.join(shots, "health.png"), full_page=True)

    # Workflows: an edit the API's checks refuse shows its error beside
    # the text, which stays as typed; nothing is saved.
    page.get_by_test_id("nav-workflows").click()
    page.get_by_test_id("workflow-link-premigrate").click()
    area = page.get_by_test_id("workflow-json")
    text = area.input_value()
    assert json.loads(text)["name"] == "premigrate", text
    broken = text.replace('"label": "Pre-Stage"', '"label": "Pre-Stage", "colour": "<red>"')
    area.fill(broken)
    expect_status(400, page.url.replace(url, ""))
    page.get_by_test_id("workflow-save").click()
    expect(page.get_by_test_id("workflow-error")).to_contain_text("colour")
    assert page.get_by_test_id("workflow-json").input_value() == broken
    page.screenshot(path=os.path.join(shots, "workflow-error.png"), full_page=True)

    # CSRF: a POST with the session's cookies but not its token is
    # refused, and so is one with a wrong token; the job stays.
    for form in ({}, {"csrf": "0" * 64}):
        r = ctx.request.post(f"{url}/ui/jobs/{finished}/do/delete/", form=form, max_redirects=0)
        assert r.status == 403, (form, r.status, r.text()[:300])
    page.goto(f"{url}/ui/jobs/{finished}/")
    expect(page.get_by_test_id("job-state")).to_have_text("FAILURE")
    report["csrf_refused"] = 403

    # ------------------------------------------------------------------
    # Without JavaScript: log in, list, job page, cancel.
    nojs = browser.new_context(java_script_enabled=False, viewport={"width": 1440, "height": 900})
    nojs.set_default_timeout(15_000)
    plain = nojs.new_page()
    watch(plain, "no-js")
    login(plain, "/ui/jobs/")
    expect(plain.get_by_test_id(f"job-link-{finished}")).to_have_text(spec["finished_name"])
    plain.get_by_test_id(f"job-link-{finished}").click()
    plain.wait_for_url(f"{url}/ui/jobs/{finished}/")
    expect(plain.get_by_test_id("task-stats-bar")).to_be_visible()
    plain.get_by_test_id("tab-failed").click()
    expect(plain.get_by_test_id("failed-path")).to_have_count(2)
    other = spec["cancel_nojs"]
    plain.goto(f"{url}/ui/jobs/{other}/")
    expect(plain.get_by_test_id("job-state")).to_have_text(re.compile("PENDING|STARTED"))
    plain.get_by_test_id("job-action-cancel").click()
    plain.wait_for_url(f"{url}/ui/jobs/{other}/?done=cancel")
    expect(plain.get_by_test_id("job-state")).to_have_text("DEQUEUING")
    expect(plain.get_by_test_id("notice")).to_contain_text("Cancel requested")
    # Delete asks first, on a page of its own.
    plain.goto(f"{url}/ui/jobs/{finished}/")
    plain.get_by_test_id("job-action-delete").click()
    plain.wait_for_url(f"{url}/ui/jobs/{finished}/confirm/delete/")
    expect(plain.get_by_test_id("confirm-question")).to_contain_text("cannot be undone")
    plain.get_by_test_id("confirm-back").click()
    plain.wait_for_url(f"{url}/ui/jobs/{finished}/")
    # Cancelling it now: refused with the reason, on the page (409).
    r = plain.request.post(
        f"{url}/ui/jobs/{finished}/do/cancel/",
        form={"csrf": plain.locator("input[name=csrf]").first.get_attribute("value")},
        max_redirects=0,
    )
    assert r.status == 409 and "it has finished: nothing to cancel" in r.text(), (r.status, r.text()[:500])
    plain.get_by_test_id("logout").click()
    plain.wait_for_url(f"{url}/ui/login/")
    plain.goto(f"{url}/ui/jobs/")
    assert "/ui/login/" in plain.url, plain.url
    nojs.close()

    # ------------------------------------------------------------------
    # Cancel with JavaScript: DEQUEUING at once, then CANCELLED by the
    # page's own 2 s refresh once an agent answers the queued batches.
    job = spec["cancel_js"]
    page.goto(f"{url}/ui/jobs/{job}/")
    expect(page.get_by_test_id("job-state")).to_have_text(re.compile("PENDING|STARTED"))
    assert page.get_by_test_id("job-live").get_attribute("hx-trigger") == "every 2s"
    page.screenshot(path=os.path.join(shots, "job-running.png"), full_page=True)
    # Pause, then resume: the buttons follow the state.
    page.get_by_test_id("job-action-pause").click()
    page.wait_for_url(f"{url}/ui/jobs/{job}/?done=pause")
    expect(page.get_by_test_id("job-state")).to_have_text(re.compile("PAUSING|PAUSED"))
    expect(page.get_by_test_id("job-action-pause")).to_have_count(0)
    page.get_by_test_id("job-action-resume").click()
    page.wait_for_url(f"{url}/ui/jobs/{job}/?done=resume")
    expect(page.get_by_test_id("job-state")).to_have_text(re.compile("PENDING|STARTED"))
    page.get_by_test_id("job-action-cancel").click()
    page.wait_for_url(f"{url}/ui/jobs/{job}/?done=cancel")
    expect(page.get_by_test_id("job-state")).to_have_text("DEQUEUING")
    page.evaluate("window.ferryMarker = 'no reload'")
    open(os.path.join(spec["signals"], "dequeuing"), "w").close()
    t0 = time.time()
    expect(page.get_by_test_id("job-state")).to_have_text("CANCELLED", timeout=120_000)
    report["cancelled_after_s"] = round(time.time() - t0, 1)
    assert page.evaluate("window.ferryMarker") == "no reload", "the page was reloaded"
    assert page.url == f"{url}/ui/jobs/{job}/?done=cancel", page.url
    # Ended: the actions follow the state, and the polling stops.
    expect(page.get_by_test_id("job-action-cancel")).to_have_count(0)
    expect(page.get_by_test_id("job-action-delete")).to_be_visible()
    assert page.get_by_test_id("job-live").get_attribute("hx-trigger") is None
    # The list shows it too.
    page.get_by_test_id("nav-jobs").click()
    expect(page.get_by_test_id(f"job-state-{job}")).to_have_text("CANCELLED")
    # Schedules: listed (disabled: no next run), and Run now starts its job.
    sched = spec["schedule"]
    page.get_by_test_id("nav-schedules").click()
    page.wait_for_url(f"{url}/ui/schedules/")
    expect(page.get_by_test_id(f"schedule-row-{sched}")).to_contain_text("30 2 * * *")
    expect(page.get_by_test_id(f"schedule-next-{sched}")).to_have_text("—")
    page.get_by_test_id(f"schedule-run-{sched}").click()
    page.wait_for_url(re.compile(rf".*/ui/schedules/\?ran={sched}&jobs=\d+"))
    expect(page.get_by_test_id("notice")).to_contain_text(f"Schedule {sched} ran now")
    page.screenshot(path=os.path.join(shots, "schedules.png"), full_page=True)
    # Its own page lists that run, by hand.
    page.get_by_test_id(f"schedule-link-{sched}").click()
    page.wait_for_url(f"{url}/ui/schedules/{sched}/")
    expect(page.get_by_test_id("schedule-runs")).to_contain_text("started")
    expect(page.get_by_test_id("schedule-runs")).to_contain_text("by hand")
    # A new schedule, made in the editor: a bad hour is refused beside the
    # text as typed, then it is created with its workflow.
    page.get_by_test_id("back-to-schedules").click()
    page.get_by_test_id("schedule-new").click()
    page.wait_for_url(f"{url}/ui/schedules/new/")
    editor = page.get_by_test_id("schedule-json")
    doc = json.loads(editor.input_value())
    assert doc["site"] == spec["site"], doc
    doc.update({"name": "every six hours", "enabled": False, "minute": "15", "hour": "25",
                "managed_paths": [spec["schedule_path"]],
                "workflows": [{"workflow": "premigrate", "queue": "default", "fields": {}}]})
    typed = json.dumps(doc, indent=2)
    editor.fill(typed)
    expect_status(400, "/ui/schedules/new/")
    page.get_by_test_id("schedule-save").click()
    expect(page.get_by_test_id("schedule-error")).to_contain_text('hour: "25"')
    assert editor.input_value() == typed, "the text as typed is kept"
    doc["hour"] = "*/6"
    editor.fill(json.dumps(doc, indent=2))
    page.get_by_test_id("schedule-save").click()
    page.wait_for_url(re.compile(rf"{re.escape(url)}/ui/schedules/\d+/\?saved=created"))
    made = int(re.search(r"/ui/schedules/(\d+)/", page.url).group(1))
    expect(page.get_by_test_id("notice")).to_have_text("Created.")
    expect(page.get_by_test_id("schedule-summary")).to_contain_text("15 */6 * * *")
    expect(page.get_by_test_id("schedule-runs-empty")).to_be_visible()
    saved = json.loads(editor.input_value())
    assert [w["workflow"] for w in saved["workflows"]] == ["premigrate"], saved
    # A workflow that does not exist: refused, naming the entry, and
    # nothing is written (the minute stays).
    saved["minute"] = "45"
    saved["workflows"].append({"workflow": "no-such"})
    editor.fill(json.dumps(saved, indent=2))
    expect_status(400, f"/ui/schedules/{made}/")
    page.get_by_test_id("schedule-save").click()
    expect(page.get_by_test_id("schedule-error")).to_contain_text('workflows[1] (no-such): workflow: no workflow called "no-such"')
    page.goto(f"{url}/ui/schedules/{made}/")
    assert json.loads(editor.input_value())["minute"] == "15"
    # Unsubscribed and changed, in one save.
    saved["workflows"] = []
    editor.fill(json.dumps(saved, indent=2))
    page.get_by_test_id("schedule-save").click()
    page.wait_for_url(f"{url}/ui/schedules/{made}/?saved=1")
    expect(page.get_by_test_id("schedule-summary")).to_contain_text("45 */6 * * *")
    assert json.loads(editor.input_value())["workflows"] == []
    report["edited_schedule"] = made
    page.screenshot(path=os.path.join(shots, "schedule.png"), full_page=True)
    # Delete asks first; the list says it went.
    page.get_by_test_id("schedule-delete").click()
    page.wait_for_url(f"{url}/ui/schedules/{made}/delete/")
    page.get_by_test_id("confirm-delete").click()
    page.wait_for_url(re.compile(rf".*/ui/schedules/\?deleted="))
    expect(page.get_by_test_id("notice")).to_contain_text('Schedule "every six hours" was deleted.')
    expect(page.get_by_test_id(f"schedule-row-{made}")).to_have_count(0)
    page.get_by_test_id("logout").click()
    page.wait_for_url(f"{url}/ui/login/")
    ctx.close()
    browser.close()

if problems:
    log("\n".join(problems))
    sys.exit(f"{len(problems)} problem(s) in the pages")
report["ok"] = True
print(json.dumps(report))
