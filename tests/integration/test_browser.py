"""The pages in a real browser (Debian's chromium, driven by Playwright) against a real API
process and a real worker: upload through the page and land on the revision; checks turn from
queued to passed without a reload (the event stream); the waveform cursor reads the values the
FST holds (read here with pywellen); a DRC row selects its marker on the board and a marker its
row; signed out, a private project's pages are the 404 page; the comparison of two KiCad
revisions shows both renders, their difference and the new and resolved violations (and a
schematic sheet's difference keeps its page white); a review
comment on a violation row appears under it (and on the next revision's page, following the
violation); an approval changes the review state. A screenshot of every main page is kept
under the directory the tests print (HWREPO_TEST_ARTIFACTS, default /tmp/hwrepo-test-artifacts)."""

from __future__ import annotations

import io
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hwrepo.checks.kicad.drc import DrcKind
from hwrepo.checks.simulation.kind import SimulationKind
from hwrepo.config import Settings
from hwrepo.service_layer import users
from hwrepo.service_layer.backends import Backends
from tests.integration.test_comparisons import board_revision_two
from tests.integration.test_pipeline import SIM_CACHE
from tests.pipeline import api_process, pipeline_stack, running_worker

CHROMIUM = Path("/usr/bin/chromium")


def _browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return "Debian's chromium is not installed (/usr/bin/chromium; apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "pip playwright is not installed (the test extras)"
    return None


pytestmark = [
    pytest.mark.needs(_browser_missing()),
    pytest.mark.needs(SimulationKind().available()),
    pytest.mark.needs(DrcKind().available()),
]

DESIGNS = Path(__file__).resolve().parents[2] / "designs"
ARTIFACTS = Path(os.environ.get("HWREPO_TEST_ARTIFACTS", "/tmp/hwrepo-test-artifacts")) / "pages"
PASSWORD = "a password for the browser"
TOP_V = b"module top(input a, output y);\n  assign y = a;\nendmodule\n"


class Site:
    def __init__(self, url: str, backends: Backends, settings: Settings) -> None:
        self.url, self.backends, self.settings = url, backends, settings

    def api(self, method: str, path: str, token: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=60, **kw)


@pytest.fixture
def site(settings: Settings, tmp_path: Path) -> Iterator[Site]:
    """A real API process (uvicorn) on the test's own servers; the worker is started by the
    test, when it wants the checks to run."""
    tuned = settings.model_copy(update={"worker_cache_dir": SIM_CACHE})
    with (
        pipeline_stack(tuned, tmp_path) as (own, backends, _client),
        api_process(own, tmp_path / "api-data", tmp_path / "api.log") as url,
    ):
        yield Site(url, backends, own)


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\npage screenshots: {ARTIFACTS}")
    return ARTIFACTS


def shoot(page: Any, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert (shots / f"{name}.png").stat().st_size > 1000


def signed_in_page(browser: Any, site: Site, name: str) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(f"{site.url}/login")
    page.fill("input[name=user]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-form button")
    page.wait_for_selector("#signed-in-as")
    return page


def wait_until(page: Any, predicate: str, timeout_s: float = 30) -> None:
    """Wait until the JavaScript `predicate` holds in the page, asked from outside the page:
    its Content-Security-Policy (scripts of the site only, no eval) stays on in the tests."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(f"() => Boolean({predicate})"):
        assert time.monotonic() < deadline, f"still not true after {timeout_s} s: {predicate}"
        time.sleep(0.2)


def zipped(design: str) -> bytes:
    buffer = io.BytesIO()
    root = DESIGNS / design
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(root).as_posix())
    return buffer.getvalue()


def bits(value: Any, width: int) -> str:
    """A pywellen value as the viewer's bit string."""
    return format(value, f"0{width}b") if isinstance(value, int) else str(value)


def test_upload_live_checks_and_the_waveform_cursor(
    site: Site, browser: Any, shots: Path, tmp_path: Path
) -> None:
    import pywellen

    users.create_user(site.backends, "alice")
    token = users.create_token(site.backends, "alice")
    users.set_password(site.backends, "alice", PASSWORD)
    made = site.api(
        "POST",
        "/api/v1/projects",
        token,
        json={"name": "counter", "kind": "hardware", "licence": "CERN-OHL-P-2.0"},
    )
    assert made.status_code == 201, made.text
    page = signed_in_page(browser, site, "alice")
    shoot(page, shots, "catalogue")

    # upload an archive through the page: a progress bar, then the revision's page
    archive = tmp_path / "counter.zip"
    archive.write_bytes(zipped("rtl-counter"))
    page.goto(f"{site.url}/upload?project=alice/counter")
    page.set_input_files("#pick-files", str(archive))
    page.fill("#upload-message", "from the browser")
    shoot(page, shots, "upload")
    page.click("#upload-start")
    page.wait_for_url(f"{site.url}/alice/counter/revisions/1")
    assert "from the browser" in page.content()
    wait_until(page, "document.getElementById('live-state').textContent === 'connected'")
    # every state a check row shows, recorded in the page; a reload would lose the record
    page.evaluate(
        """() => {
        window.seen = {};
        window.notReloaded = true;
        const note = () => {
          for (const row of document.querySelectorAll('#checks tr[data-check-id]')) {
            const s = row.querySelector('.state').textContent;
            const list = (window.seen[row.dataset.checkId] ||= []);
            if (list[list.length - 1] !== s) list.push(s);
          }
        };
        new MutationObserver(note).observe(document.getElementById('checks'),
          {subtree: true, childList: true, characterData: true});
      }"""
    )
    assert page.locator("#checks tr[data-check-id]").count() == 0  # nothing planned yet
    with running_worker(site.settings, concurrency=2):
        wait_until(
            page,
            """(() => { const rows = document.querySelectorAll('#checks tr[data-check-id]');
              const done = ['passed', 'failed', 'errored'];
              return rows.length >= 3
                && [...rows].every(r => done.includes(r.querySelector('.state').textContent));
            })()""",
            300,
        )
        seen = page.evaluate("window.seen")
        assert page.evaluate("window.notReloaded") is True
        states = {tuple(v) for v in seen.values()}
        assert all(v[0] == "queued" and v[-1] == "passed" for v in states), seen
        wait_until(page, "document.getElementById('revision-state').textContent === 'success'")
        shoot(page, shots, "revision")

        checks = site.api("GET", "/api/v1/projects/alice/counter/revisions/1/checks", token)
        by_kind = {c["kind"]: c for c in checks.json()["checks"]}
        simulation = by_kind["simulation"]
        detail = site.api("GET", simulation["url"], token).json()
        failing_time = detail["details"]["tests"][0]["sim_time_ns"]

        # the waveform: a test's time opens the viewer there, with the cursor on it
        page.goto(f"{site.url}/alice/counter/revisions/1/checks/{simulation['id']}")
        page.wait_for_selector("#waves[data-ready=true]", timeout=60_000)
        page.click(f"a.sim-time[data-time-ns='{failing_time}']")
        wait_until(
            page,
            "document.querySelectorAll('#wave-values td.value:not([data-bits=\"\"])').length > 0",
            60,
        )
        fst = tmp_path / "waves.fst"
        fst.write_bytes(site.api("GET", simulation["url"] + "/waveform", token).content)
        wave = pywellen.Waveform(str(fst))
        shown = wave_values(page)
        ticks = int(page.get_attribute("#wave-cursor-time", "data-ticks") or "-1")
        scale = wave.timescale
        assert str(scale.unit).endswith("ps") and scale.factor == 1
        assert abs(ticks - failing_time * 1000) <= 1
        assert len(shown) >= 2
        variables = {v.full_name: v for v in wave.all_vars()}
        for name, value in shown.items():
            var = variables[name]
            assert value == bits(var.signal.value_at(ticks), var.bitwidth), name
        # a click elsewhere on the canvas: the cursor moves, the values still match
        canvas = page.locator("#wave-canvas").bounding_box()
        page.mouse.click(canvas["x"] + canvas["width"] * 0.3, canvas["y"] + 10)
        wait_until(page, f"document.getElementById('wave-cursor-time').dataset.ticks !== '{ticks}'")
        page.wait_for_timeout(2000)
        moved = int(page.get_attribute("#wave-cursor-time", "data-ticks") or "-1")
        for name, value in wave_values(page).items():
            var = variables[name]
            assert value == bits(var.signal.value_at(moved), var.bitwidth), (name, moved)
        shoot(page, shots, "check-simulation")

        for kind in ("rtl-structure", "rtl-lint"):
            page.goto(f"{site.url}/alice/counter/revisions/1/checks/{by_kind[kind]['id']}")
            page.wait_for_load_state("networkidle")
            shoot(page, shots, f"check-{kind}")
        page.goto(f"{site.url}/alice/counter/revisions/1/files/rtl/counter.v#L5")
        assert page.locator("#L5").count() == 1
        shoot(page, shots, "file")
        page.goto(f"{site.url}/alice/counter")
        shoot(page, shots, "project")
        page.goto(f"{site.url}/settings/tokens")
        shoot(page, shots, "tokens")
    assert page.errors == []


def wave_values(page: Any) -> dict[str, str]:
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#wave-values tr')]
          .map(r => [r.dataset.signal, r.querySelector('td.value').dataset.bits]))"""
    )


def test_violation_rows_and_markers_and_private_pages(
    site: Site, browser: Any, shots: Path
) -> None:
    users.create_user(site.backends, "bob")
    token = users.create_token(site.backends, "bob")
    users.set_password(site.backends, "bob", PASSWORD)
    for name, visibility in (("board", "public"), ("secret", "private")):
        made = site.api(
            "POST",
            "/api/v1/projects",
            token,
            json={"name": name, "kind": "hardware", "licence": "MIT", "visibility": visibility},
        )
        assert made.status_code == 201, made.text
        sent = site.api(
            "POST",
            f"/api/v1/projects/bob/{name}/revisions",
            token,
            files=[("archive", ("board.zip", zipped("kicad-violations")))],
        )
        assert sent.status_code == 201, sent.text
    with running_worker(site.settings, concurrency=2):
        deadline = time.monotonic() + 300
        while True:
            body = site.api("GET", "/api/v1/projects/bob/board/revisions/1/checks", token).json()
            if body["state"] != "pending":
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.5)
    by_kind = {c["kind"]: c for c in body["checks"]}
    drc = by_kind["drc"]
    violations = site.api("GET", drc["url"] + "/violations", token).json()["items"]
    positioned = [v for v in violations if any(i.get("x_mm") is not None for i in v["items"])]
    assert len(positioned) >= 3

    page = signed_in_page(browser, site, "bob")
    page.goto(f"{site.url}/bob/board/revisions/1/checks/{drc['id']}")
    page.wait_for_selector("#violations tr.violation")
    page.wait_for_selector("circle.marker")
    # every violation with a position is drawn, once per position
    points = sum(sum(1 for i in v["items"] if i.get("x_mm") is not None) for v in positioned)
    assert page.locator("circle.marker").count() == points
    # a row selects its marker (and zooms there) ...
    first = positioned[0]["index"]
    page.click(f"#violation-{first} td:nth-child(3)")
    selected = page.locator("circle.marker.selected")
    assert selected.count() >= 1
    assert {int(i) for i in selected.evaluate_all("ms => ms.map(m => m.dataset.index)")} == {first}
    assert "selected" in (page.get_attribute(f"#violation-{first}", "class") or "")
    assert page.evaluate("location.hash") == f"#violation-{first}"
    # ... and a marker its row
    other = positioned[-1]["index"]
    page.locator(f"circle.marker[data-index='{other}']").first.dispatch_event("click")
    wait_until(page, f"document.getElementById('violation-{other}').classList.contains('selected')")
    assert "selected" not in (page.get_attribute(f"#violation-{first}", "class") or "")
    assert page.evaluate("location.hash") == f"#violation-{other}"
    shown = page.text_content(f"#violation-{other}") or ""
    assert f"hwrepo kicad show bob/board 1 {drc['id']} {other}" in shown
    shoot(page, shots, "check-drc")
    # the bridge's URL opens with that violation selected
    page.goto(f"{site.url}/bob/board/revisions/1/checks/{drc['id']}#violation-{first}")
    page.wait_for_selector(f"#violation-{first}.selected")
    for kind in ("erc", "render"):
        page.goto(f"{site.url}/bob/board/revisions/1/checks/{by_kind[kind]['id']}")
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(1000)
        shoot(page, shots, f"check-{kind}")
        # the bridge drives KiCad's PCB editor only: no line to copy for a schematic's rows
        assert "hwrepo kicad show" not in (page.text_content("main") or "")
    assert page.errors == []

    # signed out, the private project's pages are the page of a project that does not exist
    outsider = browser.new_page()
    missing = outsider.goto(f"{site.url}/bob/nothing")
    assert missing is not None and missing.status == 404
    missing_text = outsider.text_content("#error-detail") or ""
    secret_check = site.api("GET", "/api/v1/projects/bob/secret/revisions/1/checks", token)
    drc_secret = next(c for c in secret_check.json()["checks"] if c["kind"] == "drc")
    for path in (
        "/bob/secret",
        "/bob/secret/revisions/1",
        "/bob/secret/revisions/1/files/violations.kicad_pcb",
        f"/bob/secret/revisions/1/checks/{drc_secret['id']}",
    ):
        answer = outsider.goto(site.url + path)
        assert answer is not None and answer.status == 404, path
        text = outsider.text_content("#error-detail") or ""
        assert text.replace("bob/secret", "bob/nothing") == missing_text, path
    shoot(outsider, shots, "not-found")
    outsider.goto(f"{site.url}/login")
    shoot(outsider, shots, "login")
    page.goto(f"{site.url}/bob/secret")
    assert "bob/secret" in (page.text_content("h1") or "")


def _checks_done(site: Site, token: str, project: str, number: int) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while True:
        url = f"/api/v1/projects/{project}/revisions/{number}/checks"
        body = site.api("GET", url, token).json()
        if body["planned"] and body["checks_state"] != "pending":
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.5)


def test_the_comparison_page_and_review_threads_in_place(
    site: Site, browser: Any, shots: Path, tmp_path: Path
) -> None:
    for name in ("carol", "dave"):
        users.create_user(site.backends, name)
        users.set_password(site.backends, name, PASSWORD)
    token = users.create_token(site.backends, "carol")
    spec = {"name": "board", "kind": "hardware", "licence": "MIT"}
    made = site.api("POST", "/api/v1/projects", token, json=spec)
    assert made.status_code == 201, made.text
    project = "carol/board"
    site.api("PUT", f"/api/v1/projects/{project}/members/dave", token, json={"role": "reviewer"})
    site.api("PATCH", f"/api/v1/projects/{project}", token, json={"required_approvals": 1})
    with running_worker(site.settings, concurrency=2):
        for design in ("kicad-violations", str(board_revision_two(tmp_path))):
            sent = site.api(
                "POST",
                f"/api/v1/projects/{project}/revisions",
                token,
                files=[("archive", ("board.zip", zipped(design)))],
            )
            assert sent.status_code == 201, sent.text
            _checks_done(site, token, project, sent.json()["number"])
    drc_ids = [
        next(c["id"] for c in _checks_done(site, token, project, n)["checks"] if c["kind"] == "drc")
        for n in (1, 2)
    ]

    page = signed_in_page(browser, site, "dave")
    # from the revision page to its comparison with the parent
    page.goto(f"{site.url}/{project}/revisions/2")
    page.click("#compare-parent")
    page.wait_for_url(f"{site.url}/{project}/compare/1...2")
    drc = page.locator(".pair[data-kind=drc]")
    new = drc.locator("table.new tr.compared-violation")
    resolved = drc.locator("table.resolved tr.compared-violation")
    assert new.count() == 1 and "silk_overlap" in (new.first.text_content() or "")
    assert resolved.count() == 1 and "clearance" in (resolved.first.text_content() or "")
    render = page.locator(".pair[data-kind=render]")
    assert "R2" in (render.locator("tr.bom-changed").text_content() or "")
    assert "2k2" in (render.locator("tr.bom-changed").text_content() or "")
    front = render.locator(".view-compared[data-view='pcb-front.svg']")
    # both renders and the difference picture, each drawn by the browser
    for image in ("img.render-a", "img.render-b", "img.difference"):
        element = front.locator(image)
        element.scroll_into_view_if_needed()
        deadline = time.monotonic() + 30
        while not element.evaluate("i => i.complete && i.naturalWidth > 0"):
            assert time.monotonic() < deadline, f"{image} was not drawn"
            time.sleep(0.2)
    difference = front.locator("img.difference").get_attribute("src") or ""
    assert f"/api/v1/projects/{project}/compare/1...2/artifacts/" in difference
    front.locator(".overlay-slider").fill("20")
    clip = front.locator(".overlay img.over").evaluate("i => i.style.clipPath")
    assert "20%" in clip
    # a changed text file's diff, on request
    row = page.locator("tr.file-changed[data-path='violations.kicad_pro']")
    row.locator("button.show-diff").click()
    wait_until(page, "document.querySelector('pre.diff .add') !== null")
    added = page.locator("pre.diff .add").all_text_contents()
    assert any('"clearance": 0.05,' in line for line in added)
    shoot(page, shots, "compare")

    # a comment on a violation row of revision 1 appears in place, under the row and at its marker
    violations = site.api(
        "GET", f"/api/v1/projects/{project}/revisions/1/checks/{drc_ids[0]}/violations", token
    ).json()["items"]
    kept = next(v for v in violations if v["type"] == "unconnected_items")
    page.goto(f"{site.url}/{project}/revisions/1/checks/{drc_ids[0]}")
    page.click(f"#violation-{kept['index']} button.start-thread")
    thread_row = page.locator(f"tr.thread-row[data-identity='{kept['identity']}']")
    thread_row.locator("form.new-thread textarea").fill("Is D1 meant to be **unconnected**?")
    thread_row.locator("form.new-thread button").click()
    page.wait_for_url(f"**/checks/{drc_ids[0]}#violation-{kept['index']}")
    placed = page.locator(f"tr.thread-row[data-identity='{kept['identity']}'] .thread")
    placed.wait_for()
    assert placed.locator(".comment-body strong").text_content() == "unconnected"
    above = placed.evaluate("t => t.closest('tr').previousElementSibling.id")
    assert above == f"violation-{kept['index']}"
    assert page.locator(f"circle.marker.has-thread[data-index='{kept['index']}']").count() >= 1
    shoot(page, shots, "check-drc-thread")
    # ... and on revision 2's check page, since the violation is still there
    page.goto(f"{site.url}/{project}/revisions/2/checks/{drc_ids[1]}")
    followed = page.locator(f"tr.thread-row[data-identity='{kept['identity']}'] .thread")
    followed.wait_for()
    assert "begun on revision 1" in (followed.locator(".thread-head").text_content() or "")
    # a reply there stays in the thread
    followed.locator("form.reply textarea").fill("Yes: it is the test of unconnected items.")
    followed.locator("form.reply button").click()
    page.wait_for_load_state("load")
    again = page.locator(f"tr.thread-row[data-identity='{kept['identity']}'] .thread .comment")
    wait_until(page, "document.querySelectorAll('tr.thread-row .thread .comment').length === 2")
    assert "unconnected items" in (again.nth(1).text_content() or "")

    # a click on the board begins a thread at that point, drawn there afterwards
    render_id = next(
        c["id"] for c in _checks_done(site, token, project, 2)["checks"] if c["kind"] == "render"
    )
    page.goto(f"{site.url}/{project}/revisions/2/checks/{render_id}")
    page.wait_for_selector("#point-board[data-ready=true]")
    image = page.locator("#point-image")
    box = image.bounding_box()
    image.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    x_mm, y_mm = float(page.input_value("#point-x")), float(page.input_value("#point-y"))
    stats = site.api("GET", f"/api/v1/projects/{project}/revisions/2/checks/{render_id}", token)
    board = stats.json()["details"]["board_statistics"]
    # the board's middle, in KiCad's millimetres
    assert abs(x_mm - (board["origin_mm"][0] + board["width_mm"] / 2)) < 1.0
    assert abs(y_mm - (board["origin_mm"][1] + board["height_mm"] / 2)) < 1.0
    page.fill("#new-point-thread textarea", "Room for a mounting hole here?")
    page.click("#new-point-thread button")
    page.wait_for_selector("#point-board[data-ready=true]")
    assert "mounting hole" in (page.text_content("#point-threads") or "")
    assert page.locator("#point-board .point-marker").count() == 1
    shoot(page, shots, "check-render-thread")

    # an approval changes the revision page's review state
    page.goto(f"{site.url}/{project}/revisions/2")
    assert page.text_content("#review-badge") == "pending"
    assert "0 of 1" in (page.text_content("#approvals") or "")
    page.click("#approve")
    page.wait_for_url(f"{site.url}/{project}/revisions/2#review-state")
    assert page.text_content("#review-badge") == "approved"
    assert "1 of 1" in (page.text_content("#approvals") or "")
    assert "approved by dave" in (page.text_content("#review-state") or "")
    shoot(page, shots, "revision-review")
    assert page.errors == []

    # signed out: the threads are readable, no form is offered
    outsider = browser.new_page()
    outsider.goto(f"{site.url}/{project}/revisions/2/checks/{drc_ids[1]}")
    outsider.locator("tr.thread-row .thread").wait_for()
    assert outsider.locator("form.new-thread, form.reply, button.start-thread").count() == 0
    outsider.goto(f"{site.url}/{project}/revisions/2")
    assert outsider.locator("#verdict-form").count() == 0


COUNT_COLOURS = """async (svg) => {
  const img = new Image();
  img.src = "data:image/svg+xml;base64," + svg;
  await img.decode();
  const canvas = document.createElement("canvas");
  canvas.width = 1188; canvas.height = 840;  // A4, 4 pixels per millimetre
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const n = {white: 0, older: 0, newer: 0, all: px.length / 4};
  for (let i = 0; i < px.length; i += 4) {
    const [r, g, b] = [px[i], px[i + 1], px[i + 2]];
    if (r > 235 && g > 235 && b > 235) n.white++;
    else if (r > 170 && g < 140 && b < 140) n.older++;
    else if (b > 170 && r < 140) n.newer++;
  }
  return n;
}"""


def test_a_schematic_difference_keeps_the_page_white_and_colours_what_moved(
    browser: Any, tmp_path: Path
) -> None:
    """Two schematic sheets as kicad-cli draws them (an opaque page), one symbol moved: drawn
    by the browser, the difference picture is the white page with the old place in the older
    revision's colour and the new place in the newer one's."""
    import base64
    import re
    import subprocess

    from hwrepo.checks.kicad.compare_render import difference_picture

    sheets = []
    for which in ("a", "b"):
        root = tmp_path / which
        root.mkdir()
        for f in (DESIGNS / "kicad-clean").iterdir():
            (root / f.name).write_bytes(f.read_bytes())
        if which == "b":  # J1 moved 20 mm to the right
            sch = root / "clean-led.kicad_sch"
            text = sch.read_text()
            at = re.search(r'\(lib_id "Connector_Generic:Conn_01x02"\)\s*\(at ([\d.]+)', text)
            assert at is not None
            moved = f"{float(at.group(1)) + 20:g}"
            sch.write_text(text[: at.start(1)] + moved + text[at.end(1) :])
        done = subprocess.run(
            ["kicad-cli", "sch", "export", "svg", "-o", str(root / "svg"), "clean-led.kicad_sch"],
            cwd=root,
            env={"HOME": str(tmp_path / "home"), "PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        sheets.append((root / "svg" / "clean-led.svg").read_bytes())
    picture = difference_picture("schematic/clean-led.svg", *sheets)
    assert picture is not None
    page = browser.new_page()
    counts = page.evaluate(COUNT_COLOURS, base64.b64encode(picture).decode())
    assert counts["white"] > 0.9 * counts["all"], counts  # the page, not a dark sheet
    assert counts["older"] > 50 and counts["newer"] > 50, counts  # J1 where it was, and is


def test_review_activity_is_announced_on_an_open_revision_page(
    site: Site, browser: Any, shots: Path
) -> None:
    for name in ("erin", "frank"):
        users.create_user(site.backends, name)
        users.set_password(site.backends, name, PASSWORD)
    erin = users.create_token(site.backends, "erin")
    spec = {"name": "notes", "kind": "hardware", "licence": "MIT"}
    assert site.api("POST", "/api/v1/projects", erin, json=spec).status_code == 201
    project = "erin/notes"
    site.api("PUT", f"/api/v1/projects/{project}/members/frank", erin, json={"role": "reviewer"})
    sent = site.api(
        "POST",
        f"/api/v1/projects/{project}/revisions",
        erin,
        files=[("files", ("README.md", b"# notes\n")), ("files", ("rtl/top.v", TOP_V))],
    )
    assert sent.status_code == 201, sent.text
    earlier = {"anchor": {"kind": "revision"}, "body": "a thread from before the page"}
    made = site.api("POST", f"/api/v1/projects/{project}/revisions/1/threads", erin, json=earlier)
    assert made.status_code == 201, made.text

    page = signed_in_page(browser, site, "frank")
    page.goto(f"{site.url}/{project}/revisions/1")
    wait_until(page, "document.getElementById('live-state').textContent === 'connected'")
    # the stream replays the revision's events: the thread shown already is no news
    time.sleep(1)
    assert page.locator("#review-news").is_hidden()
    later = {"anchor": {"kind": "revision"}, "body": "a thread begun while frank reads"}
    made = site.api("POST", f"/api/v1/projects/{project}/revisions/1/threads", erin, json=later)
    assert made.status_code == 201, made.text
    wait_until(page, "!document.getElementById('review-news').hidden")
    news = page.locator("#review-news").text_content() or ""
    assert "1 review event since this page was loaded" in news and "erin began a thread" in news
    comment = {"body": "and a reply"}
    thread = made.json()["id"]
    r = site.api(
        "POST", f"/api/v1/projects/{project}/threads/{thread}/comments", erin, json=comment
    )
    assert r.status_code == 201, r.text
    said = "document.getElementById('review-news').textContent"
    wait_until(page, f"{said}.includes('2 review events')")
    assert "erin commented" in (page.locator("#review-news").text_content() or "")
    shoot(page, shots, "revision-review-news")
    page.click("#review-reload")
    page.wait_for_selector("text=a thread begun while frank reads")
    wait_until(page, "document.getElementById('live-state').textContent === 'connected'")
    time.sleep(1)
    assert page.locator("#review-news").is_hidden()
    assert "and a reply" in (page.locator("#revision-threads").text_content() or "")

    # a file's page: threads on that file are news, threads elsewhere are not
    page.goto(f"{site.url}/{project}/revisions/1/files/rtl/top.v")
    wait_until(page, "document.querySelectorAll('#code .ln').length > 0")
    time.sleep(1.5)  # the stream connected and replayed the revision's events
    assert page.locator("#review-news").is_hidden()
    elsewhere = {"anchor": {"kind": "file", "path": "README.md", "line_start": 1}, "body": "x"}
    on_readme = site.api(
        "POST", f"/api/v1/projects/{project}/revisions/1/threads", erin, json=elsewhere
    )
    assert on_readme.status_code == 201, on_readme.text
    here = {"anchor": {"kind": "file", "path": "rtl/top.v", "line_start": 1}, "body": "look"}
    on_top = site.api("POST", f"/api/v1/projects/{project}/revisions/1/threads", erin, json=here)
    assert on_top.status_code == 201, on_top.text
    wait_until(page, "!document.getElementById('review-news').hidden")
    assert "1 review event since" in (page.locator("#review-news").text_content() or "")
    assert not page.errors, page.errors
