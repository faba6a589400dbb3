"""The demo's web page in a real browser: sign in, Uppy uploads straight to S3, download, cancel, retry.

Uploads go through the Dashboard's own file input, so every request is what
the page sends: the Companion-compatible routes with the session cookie
(parts signed in batches, each with its Content-MD5), and part PUTs, several
at once, from the browser to the demo's S3. Holding a part's PUT (with
Playwright's request routing) makes cancelling and failing happen mid-upload
without any timing assumption.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from pathlib import Path

import pytest

from .conftest import ARTIFACTS

pytestmark = pytest.mark.slow  # a browser and the demo (~15 s for the module, then seconds per test)

MiB = 1024 * 1024
DEADLINE = 120
"""Seconds a browser step may take before the test gives up (a hang guard, not a performance bound)."""


def sign_in(page, demo, who: str = "user") -> None:
    page.goto(demo["url"] + "/")
    assert page.url.startswith(demo["url"] + "/sign-in")
    page.get_by_label("E-mail").fill(demo[who])
    page.get_by_label("Password").fill(demo[who.replace("user", "password")])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Your records").wait_for()


def new_draft(page, title: str) -> str:
    """Create a draft through the form; return its id (the page is then on it)."""
    page.get_by_label("Title").fill(title)
    page.get_by_role("button", name="Create draft").click()
    page.get_by_role("heading", name=title).wait_for()
    page.wait_for_function("window.uppy !== undefined && window.uppy !== null")
    return page.url.rstrip("/").rsplit("/", 1)[1]


def add_files(page, paths: list[Path]) -> None:
    """What picking files in the Dashboard's "browse files" dialog does."""
    page.locator("input.uppy-Dashboard-input[name='files[]']").first.set_input_files([str(p) for p in paths])


def file_rows(page) -> dict[str, dict]:
    """The page's file list: {name: {size, checksum, status, href}}."""
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#file-list tbody tr')].map((tr) => [
            tr.dataset.key,
            {size: tr.querySelector('.size').textContent, checksum: tr.querySelector('.checksum').textContent,
             status: tr.dataset.status, href: tr.querySelector('a')?.href ?? null}]))"""
    )


def wait_for(page, predicate, what: str):
    """Poll ``predicate``; waiting through the page lets Playwright run route handlers meanwhile."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        page.wait_for_timeout(200)
    pytest.fail(f"gave up waiting for {what}")


def in_progress_uploads(s3, bucket: str) -> list[dict]:
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def part_number(url: str) -> str:
    """The ``partNumber`` of a part PUT's URL."""
    match = re.search(r"partNumber=(\d+)", url)
    assert match, url
    return match.group(1)


def hold_part_two(page, demo) -> tuple[list, list, list]:
    """Route the page's S3 requests so that part 2's first PUT is held (not sent) until the test lets it go.

    :returns: the held route (a list, empty until then), the part numbers PUT and those whose PUT
        finished, filled in as the page works.
    """
    held: list = []
    puts: list[str] = []
    arrived: list[str] = []
    page.on("requestfinished", lambda request: arrived.append(part_number(request.url))
            if request.method == "PUT" else None)

    def hold(route):
        if route.request.method == "PUT":
            part = part_number(route.request.url)
            puts.append(part)
            if part == "2" and not held:
                held.append(route)
                return
        route.continue_()

    page.route(f"{demo['s3_endpoint']}/**", hold)
    return held, puts, arrived


def test_upload_three_files_download_and_publish(page, demo, demo_s3, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(30 * MiB))
    tiny = tmp_path / "tiny.txt"
    tiny.write_bytes(b"hello S3\n")
    accented = tmp_path / "Příliš žluťoučký kůň – Ωμέγα.txt"
    accented.write_bytes("úpěl ďábelské ódy\n".encode() * 1000)

    sign_in(page, demo)
    pid = new_draft(page, "Browser upload")
    add_files(page, [big, tiny, accented])
    page.locator(".uppy-StatusBar-actionBtn--upload").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#file-list tbody tr[data-status=completed]').length === 3",
        timeout=DEADLINE * 1000,
    )
    assert page.evaluate("window.uppy.getFiles().every((f) => f.progress.uploadComplete)")
    page.get_by_text("Upload complete").first.wait_for()
    page.get_by_role("status").filter(has_text="3 files uploaded.").wait_for()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "upload-complete.png"), full_page=True)

    rows = file_rows(page)
    assert set(rows) == {big.name, tiny.name, accented.name}
    # 30 MiB spread over the page's six parts in flight: six parts of 5 MiB, and the multipart ETag says so.
    assert re.fullmatch(r"s3etag:[0-9a-f]{32}-6", rows[big.name]["checksum"])
    assert re.fullmatch(r"s3etag:[0-9a-f]{32}-1", rows[tiny.name]["checksum"])
    assert f"({30 * MiB:,} bytes)" in rows[big.name]["size"]
    assert rows[tiny.name]["size"] == f"{tiny.stat().st_size} bytes"

    # The bytes are in S3, not in the app: the object sizes there are the files' sizes.
    in_s3 = {o["Size"] for o in demo_s3.list_objects_v2(Bucket=demo["bucket"])["Contents"]}
    assert {p.stat().st_size for p in (big, tiny, accented)} <= in_s3
    assert in_progress_uploads(demo_s3, demo["bucket"]) == []

    # Download links: 302 to a presigned S3 URL, the very bytes that were uploaded.
    for path in (big, accented):
        response = page.request.get(rows[path.name]["href"], max_redirects=0)
        assert response.status == 302 and response.headers["location"].startswith(demo["s3_endpoint"])
        download = page.request.get(rows[path.name]["href"])
        assert download.ok and download.body() == path.read_bytes()

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Publish this draft").click()
    page.locator(".badge.published").first.wait_for()
    page.wait_for_function("() => document.querySelectorAll('#file-list tbody tr').length === 3")
    assert page.locator("#uploader").count() == 0
    assert page.request.get(f"{demo['url']}/records/{pid}").json()["status"] == "published"


def test_cancel_aborts_the_upload_in_s3(page, demo, demo_s3, tmp_path):
    big = tmp_path / "cancelled.bin"
    big.write_bytes(os.urandom(12 * MiB))
    held = []

    def hold_second_part(route):
        if route.request.method == "PUT" and "partNumber=2" in route.request.url:
            held.append(route)  # never answered: the upload stays in flight until cancelled
        else:
            route.continue_()

    page.route(f"{demo['s3_endpoint']}/**", hold_second_part)
    sign_in(page, demo)
    pid = new_draft(page, "Cancelled upload")
    add_files(page, [big])
    page.locator(".uppy-StatusBar-actionBtn--upload").click()
    wait_for(page, lambda: held, "the second part's PUT")
    assert len(in_progress_uploads(demo_s3, demo["bucket"])) == 1
    pending = page.request.get(f"{demo['url']}/draft/records/{pid}/files/").json()["entries"]
    assert [e["status"] for e in pending] == ["pending"]

    page.locator("[data-cy=cancel]").click()
    wait_for(page, lambda: not in_progress_uploads(demo_s3, demo["bucket"]), "the upload to be aborted in S3")
    assert page.request.get(f"{demo['url']}/draft/records/{pid}/files/").json()["entries"] == []
    page.get_by_text("No files yet.").wait_for()
    for route in held:
        route.abort()
    page.screenshot(path=str(ARTIFACTS / "upload-cancelled.png"), full_page=True)


def test_retry_resumes_after_a_failed_part(page, demo, demo_s3, tmp_path):
    """Part 2 fails until the page gives up (after its own automatic retries); Retry then resumes.

    The resumed upload asks the server which parts S3 already holds, so parts 1
    and 3 (sent beside part 2) are not sent again.
    """
    data = os.urandom(11 * MiB)
    path = tmp_path / "flaky.bin"
    path.write_bytes(data)
    network = {"part 2 fails": True}
    puts = []

    def flaky_part_two(route):
        if route.request.method == "PUT":
            part = part_number(route.request.url)
            puts.append(part)
            if part == "2" and network["part 2 fails"]:
                route.abort("connectionreset")
                return
        route.continue_()

    page.route(f"{demo['s3_endpoint']}/**", flaky_part_two)
    sign_in(page, demo)
    new_draft(page, "Flaky network")
    add_files(page, [path])
    page.locator(".uppy-StatusBar-actionBtn--upload").click()
    retry = page.locator(".uppy-StatusBar-actionBtn--retry")
    retry.wait_for(timeout=DEADLINE * 1000)
    page.get_by_role("status").filter(has_text="failed").wait_for()
    assert puts.count("1") == 1 and puts.count("2") > 1 and puts.count("3") == 1, puts
    page.screenshot(path=str(ARTIFACTS / "upload-failed.png"), full_page=True)

    network["part 2 fails"] = False
    retry.click()
    page.wait_for_function(
        "() => document.querySelector('#file-list tbody tr[data-status=completed]') !== null",
        timeout=DEADLINE * 1000,
    )
    assert puts.count("1") == 1 and puts.count("3") == 1, puts  # resumed: parts 1 and 3 were already in S3
    row = file_rows(page)[path.name]
    assert re.fullmatch(r"s3etag:[0-9a-f]{32}-3", row["checksum"])
    assert page.request.get(row["href"]).body() == data


def test_pause_and_resume(page, demo, tmp_path):
    """Pausing aborts the part in flight; resuming asks S3 for the parts it has and sends the rest.

    The three parts go out together; part 2 is held until the page pauses, after parts 1 and 3 arrived.
    """
    data = os.urandom(12 * MiB)
    path = tmp_path / "paused.bin"
    path.write_bytes(data)
    held, puts, arrived = hold_part_two(page, demo)  # part 2 in flight until the page pauses
    sign_in(page, demo)
    new_draft(page, "Paused upload")
    add_files(page, [path])
    page.locator(".uppy-StatusBar-actionBtn--upload").click()
    wait_for(page, lambda: held and {"1", "3"} <= set(arrived), "parts 1 and 3 in S3, part 2 in flight")
    pause = page.locator("[data-cy=togglePauseResume]")
    assert pause.get_attribute("aria-label") == "Pause"
    pause.click()
    page.wait_for_function("window.uppy.getFiles()[0].isPaused === true")
    assert page.locator("[data-cy=togglePauseResume]").get_attribute("aria-label") == "Resume"
    page.screenshot(path=str(ARTIFACTS / "upload-paused.png"), full_page=True)
    held[0].abort()
    page.locator("[data-cy=togglePauseResume]").click()
    page.wait_for_function(
        "() => document.querySelector('#file-list tbody tr[data-status=completed]') !== null",
        timeout=DEADLINE * 1000,
    )
    assert puts.count("1") == 1 and puts.count("2") == 2 and puts.count("3") == 1, puts
    row = file_rows(page)[path.name]
    assert page.request.get(row["href"]).body() == data


ANIMATION_SAMPLER = """() => {
    // Every 20 ms until stopped: the CSS animations and transitions running while the status bar says uploading.
    window.animationSamples = 0
    window.animationsSeen = new Map()
    window.animationSampler = setInterval(() => {
        if (!document.querySelector('.uppy-StatusBar.is-uploading')) return
        window.animationSamples += 1
        for (const a of document.getAnimations()) {
            const what = [a.constructor.name, a.animationName || a.transitionProperty,
                          a.effect.target.getAttribute('class') || a.effect.target.tagName,
                          String(a.effect.getTiming().iterations)].join(' | ')
            window.animationsSeen.set(what, (window.animationsSeen.get(what) || 0) + 1)
        }
    }, 20)
}"""


def test_nothing_animates_while_uploading(page, demo, tmp_path):
    """No animation runs for the length of an upload: every frame of one costs CPU that the upload needs.

    Uppy's own styles turn a spinner forever and let the progress bar and
    ring glide after every progress update; the page turns both off
    (``demo.css``). Part 2 is held until the page has been sampled while
    uploading and parts 1 and 3 (progress updates) have arrived.
    """
    path = tmp_path / "animated.bin"
    path.write_bytes(os.urandom(12 * MiB))
    held, _, arrived = hold_part_two(page, demo)
    sign_in(page, demo)
    new_draft(page, "Still upload")
    add_files(page, [path])
    page.evaluate(ANIMATION_SAMPLER)
    page.locator(".uppy-StatusBar-actionBtn--upload").click()
    wait_for(page, lambda: held and {"1", "3"} <= set(arrived)
             and page.evaluate("window.animationSamples") >= 10, "parts 1 and 3 in S3 and the uploading page sampled")
    held[0].continue_()
    page.wait_for_function("() => document.querySelector('#file-list tbody tr[data-status=completed]') !== null",
                           timeout=DEADLINE * 1000)
    seen = page.evaluate("clearInterval(window.animationSampler) || Object.fromEntries(window.animationsSeen)")
    endless = [what for what in seen if what.endswith("| Infinity")]
    following_progress = [what for what in seen if "progress" in what.split(" | ")[2].lower()]
    assert endless == [] and following_progress == [], seen
    assert file_rows(page)[path.name]["status"] == "completed"


def test_drag_and_drop(page, demo):
    """A file dropped on the Dashboard (a DataTransfer drop, as the browser makes it) uploads like a picked one."""
    sign_in(page, demo)
    new_draft(page, "Dropped file")
    payload = "dropped with the mouse ✓\n" * 100
    data_transfer = page.evaluate_handle(
        """(text) => {
            const transfer = new DataTransfer()
            transfer.items.add(new File([text], 'dropped.txt', { type: 'text/plain' }))
            return transfer
        }""",
        payload,
    )
    target = page.locator(".uppy-Dashboard-inner")
    target.dispatch_event("dragenter", {"dataTransfer": data_transfer})
    target.dispatch_event("dragover", {"dataTransfer": data_transfer})
    target.dispatch_event("drop", {"dataTransfer": data_transfer})
    page.wait_for_function("window.uppy.getFiles().length === 1")
    page.locator(".uppy-StatusBar-actionBtn--upload").click()
    page.wait_for_function("() => document.querySelector('#file-list tbody tr[data-status=completed]') !== null")
    row = file_rows(page)["dropped.txt"]
    assert page.request.get(row["href"]).body() == payload.encode()


def test_empty_file_uploads_with_the_others(page, demo, demo_s3, tmp_path):
    """Uppy sends a 0-byte file as one form POST (no part to send): it lands complete, next to a multipart one."""
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    small = tmp_path / "small.txt"
    small.write_bytes(b"not empty\n")
    posts = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    sign_in(page, demo)
    new_draft(page, "Empty file")
    add_files(page, [empty, small])
    page.locator(".uppy-StatusBar-actionBtn--upload").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#file-list tbody tr[data-status=completed]').length === 2",
        timeout=DEADLINE * 1000,
    )
    assert page.evaluate("window.uppy.getFiles().every((f) => f.progress.uploadComplete && !f.error)")
    rows = file_rows(page)
    assert rows["empty.txt"]["size"] == "0 bytes"
    assert rows["empty.txt"]["checksum"] == "md5:d41d8cd98f00b204e9800998ecf8427e"
    assert re.fullmatch(r"s3etag:[0-9a-f]{32}-1", rows["small.txt"]["checksum"])
    download = page.request.get(rows["empty.txt"]["href"])
    assert download.ok and download.body() == b""
    assert in_progress_uploads(demo_s3, demo["bucket"]) == []
    assert sum(url.endswith("/uppy/s3/empty") for url in posts) == 1  # the form POST, to the app, not to S3


def test_parts_are_signed_in_batches_with_their_content_md5(page, demo, demo_s3, tmp_path):
    """A 40 MiB file: six parts, signed in one request to the app, each PUT with its part's Content-MD5.

    moto checks no digest, so the test does: every part's header is the MD5 of
    that part's bytes (Ceph refuses a PUT whose bytes do not match it).
    """
    data = os.urandom(40 * MiB)
    path = tmp_path / "batched.bin"
    path.write_bytes(data)
    app_requests, puts, created = [], [], []

    def seen(request):
        if request.url.startswith(demo["s3_endpoint"]) and request.method == "PUT":
            puts.append((int(part_number(request.url)), request.headers))
        elif "/uppy/" in request.url:
            app_requests.append((request.method, request.url.split("?")[0].rsplit("/uppy/s3/", 1)[1]))

    page.on("request", seen)
    page.on("response", lambda r: created.append(r.json()) if r.request.method == "POST"
            and r.url.split("?")[0].endswith("/uppy/s3/multipart") else None)
    sign_in(page, demo)
    new_draft(page, "Batched upload")
    add_files(page, [path])
    page.locator(".uppy-StatusBar-actionBtn--upload").click()
    page.wait_for_function("() => document.querySelector('#file-list tbody tr[data-status=completed]') !== null",
                           timeout=DEADLINE * 1000)

    part_size = created[0]["partSize"]
    count = -(-len(data) // part_size)
    assert part_size == 7 * MiB and count == 6  # the file spread over the six parts in flight
    upload_id = re.escape(created[0]["uploadId"])
    kinds = [(method, re.sub(f"multipart/{upload_id}", "multipart/<id>", path)) for method, path in app_requests]
    assert kinds == [("POST", "multipart"), ("POST", "multipart/<id>/batch"), ("POST", "multipart/<id>/complete")]
    assert sorted(n for n, _ in puts) == list(range(1, count + 1))
    for n, headers in puts:
        part = data[(n - 1) * part_size : n * part_size]
        assert headers.get("content-md5") == base64.b64encode(hashlib.md5(part).digest()).decode(), n
    row = file_rows(page)[path.name]
    assert re.fullmatch(r"s3etag:[0-9a-f]{32}-6", row["checksum"])
    assert page.request.get(row["href"]).body() == data
    assert in_progress_uploads(demo_s3, demo["bucket"]) == []


def test_stock_uppy_uploads_through_the_companion_routes(page, demo, demo_s3, tmp_path):
    """``?uploader=stock``: stock ``@uppy/aws-s3`` against the same routes, as any site's own Uppy would."""
    big = tmp_path / "stock.bin"
    big.write_bytes(os.urandom(12 * MiB))
    tiny = tmp_path / "stock-tiny.txt"
    tiny.write_bytes(b"stock Uppy\n")
    sign_in(page, demo)
    new_draft(page, "Stock Uppy")
    page.goto(page.url + "?uploader=stock")
    page.wait_for_function("window.uppy !== undefined && window.uppy !== null")
    assert page.evaluate("window.uppy.getPlugin('AwsS3') !== undefined")  # the stock plugin, not ours
    add_files(page, [big, tiny])
    page.locator(".uppy-StatusBar-actionBtn--upload").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#file-list tbody tr[data-status=completed]').length === 2",
        timeout=DEADLINE * 1000,
    )
    rows = file_rows(page)
    # Uppy's own part size, max(5 MiB, size / 10,000): parts of 5, 5 and 2 MiB, as the server planned.
    assert re.fullmatch(r"s3etag:[0-9a-f]{32}-3", rows[big.name]["checksum"])
    for path in (big, tiny):
        download = page.request.get(rows[path.name]["href"])
        assert download.ok and download.body() == path.read_bytes()
    assert in_progress_uploads(demo_s3, demo["bucket"]) == []
