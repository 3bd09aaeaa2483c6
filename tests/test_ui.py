"""The web page at /ui/, driven in a real headless Chromium against a real service.

One service (``app.py -t query``, tiny random CLIP) and one browser per module; each
test gets a fresh browser context, so its own localStorage. What the page shows is
compared with what the HTTP API answers for the same request. Screenshots go to
tests/artifacts/ for people to look at.
"""
import base64
import json
import re
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.harness import Server, data_uri, free_port, http_post, png_bytes, run_app

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
expect = sync_api.expect

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed: apt-get install -y chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

COLORS = {"red": (220, 30, 40), "orange": (245, 140, 20), "yellow": (240, 210, 20),
          "green": (30, 170, 70), "blue": (40, 80, 220), "purple": (140, 50, 190)}
CAPTIONS = {
    "carol": ["a red square on white", "an orange block", "a yellow box in the sun",
              "green squares in a row", "a blue tile", "purple rectangles"],
    "dave": ["a red ball", "orange circles everywhere", "a round yellow lemon",
             "a green circle", "blue dots on paper", "a purple disc"],
}
K = 12
MORE_LIKE_THIS = "button[title='Find more like this']"  # a result's own button (beside its marks)
DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
DEMO_MODEL = ("--model", "demo-clip")  # the shipped checkpoint: results mean something


def picture(color: str, shape: str) -> bytes:
    return png_bytes(COLORS[color], size=(160, 120), shape=shape)



def content() -> list[dict]:
    """carol posts squares and square captions, dave circles and round ones."""
    docs = []
    for owner, shape in (("carol", "rect"), ("dave", "circle")):
        docs += [{"id": f"{owner}-img-{c}", "owner": owner, "modality": "image", "uri": data_uri(picture(c, shape))}
                 for c in COLORS]
        docs += [{"id": f"{owner}-txt-{i}", "owner": owner, "modality": "text", "text": t}
                 for i, t in enumerate(CAPTIONS[owner])]
    return docs


class Service:
    def __init__(self, server: Server):
        self.server = server
        self.base = f"http://127.0.0.1:{server.http_port}"
        self.url = f"{self.base}/ui/"

    def post(self, endpoint: str, data: list, **parameters) -> dict:
        status, body = http_post(self.server.http_port, endpoint, data, parameters)
        assert status == 200, body
        return body["data"]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The shipped demo data and demo model, as `make run` serves them, plus carol's and dave's posts."""
    workspace = tmp_path_factory.mktemp("ui") / "workspace"
    # no --data: `-t index` indexes the shipped demo data, and says so
    indexed = run_app("-t", "index", "--workspace", str(workspace), *DEMO_MODEL)
    assert indexed.returncode == 0, indexed.stderr[-2000:]
    assert f"no --data given: indexing the shipped demo data in {DEMO}" in indexed.stdout
    assert "updated 0, failed 0" in indexed.stdout
    server = Server(workspace, free_port(), free_port(), *DEMO_MODEL).start()
    try:
        svc = Service(server)
        assert {d["status"] for d in svc.post("/index", content())} == {"indexed"}
        yield svc
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, service):
    """A fresh context on /ui/; fails the test on uncaught script errors or CSP violations."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda err: problems.append(f"uncaught: {err}"))
    page.on("console", lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.goto(service.url)
    expect(page.locator("#service")).to_have_attribute("data-state", "online")
    yield page
    context.close()
    assert not problems, problems


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"ui-{name}.png"), full_page=True)


def be(page, user: str) -> None:
    page.fill("#user", user)
    page.press("#user", "Tab")  # 'change' fires when the field loses focus


def wait_results(page, endpoint: str, action) -> None:
    """Run ``action`` and wait until the page has rendered the answer it triggers."""
    with page.expect_response(f"**{endpoint}"):
        action()
    container = "#foryou-results" if endpoint == "/recommend" else "#search-results"
    expect(page.locator(container)).to_have_attribute("aria-busy", "false")


def search_text(page, text: str) -> None:
    page.fill("#q", text)
    wait_results(page, "/search", lambda: page.press("#q", "Enter"))


def shown_ids(page, kind: str, root: str = "#search-results") -> list[str]:
    return page.locator(f"{root} [data-kind={kind}] [data-id]:visible").evaluate_all(
        "items => items.map(item => item.dataset.id)")


def listed_ids(page, kind: str, root: str = "#search-results") -> list[str]:
    """Every result of a kind in page order, also those under the cut-off."""
    return page.locator(f"{root} [data-kind={kind}] [data-id]").evaluate_all(
        "items => items.map(item => item.dataset.id)")


def show_all(page) -> None:
    """Move the relevance cut-off to its minimum, as a person pressing Home on it."""
    page.locator("#cutoff").focus()
    page.keyboard.press("Home")


def api_ids(service, query: dict, username: str, kind: str) -> list[str]:
    [doc] = service.post("/search", [{"id": "q", **query}], k=K, username=username)
    return [m["id"] for m in doc[f"{kind}_matches"]]


def test_browsers_opening_root_land_on_the_page_and_health_check_stays(page, service):
    request = urllib.request.Request(service.base + "/", headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == {}  # Jina's health check, for every non-browser client
    page.goto(service.base + "/")
    assert page.url == service.url
    expect(page).to_have_title("crossmodal · search texts and images together")
    [stats] = service.post("/stats", [])
    count = stats["tags"]["count"]
    assert count["image"] > 300 and count["text"] > 375  # the demo set and the posts above
    expect(page.locator("#service")).to_contain_text("demo-clip")
    expect(page.locator("#service")).to_contain_text(f"{count['text']} texts · {count['image']} images")


def demo_captions() -> dict[str, str]:
    """Caption of each demo image, by the id `app.py -t index` gives it."""
    rows = (line.split(",") for line in (DEMO / "captions.csv").read_text().splitlines()[1:])
    return {f"images/{image}": caption for image, caption, _ in rows}


def test_text_query_shows_thumbnails_and_texts_in_service_order(page, service):
    be(page, "erin")
    query = "one large red square on a white background"
    search_text(page, query)
    show_all(page)  # images under the cut-off are hidden, and lazy images load once shown
    images = page.locator("#search-results [data-kind=image] img")
    expect(images).to_have_count(K)
    page.wait_for_function("() => [...document.querySelectorAll('#search-results img')].every(i => i.complete)")
    assert all(src.startswith("data:image/jpeg;base64,") for src in
               images.evaluate_all("imgs => imgs.map(i => i.src)"))
    assert images.evaluate_all("imgs => imgs.every(i => i.complete && i.naturalWidth > 0)")
    assert listed_ids(page, "image") == api_ids(service, {"text": query}, "erin", "image")
    assert listed_ids(page, "text") == api_ids(service, {"text": query}, "erin", "text")
    # the demo model understands it: both images with exactly this caption in the top 3, and each
    # of the top 5 differs from the query in one attribute at most (shape, count or background)
    from crossmodal.train.describe import ATTRIBUTES, parse_caption

    captions = {**demo_captions(), "carol-img-red": "one large red square on a white background"}
    top = [captions.get(i, "") for i in listed_ids(page, "image")[:5]]
    assert top[:3].count(query) >= 2, top
    wanted = parse_caption(query)
    assert all(sum(getattr(parse_caption(c), a) == getattr(wanted, a) for a in ATTRIBUTES) >= 4 for c in top), top
    shot(page, "search-text")


def test_uploaded_image_finds_its_exact_duplicate_first(page, service):
    be(page, "erin")
    upload = {"name": "blue.png", "mimeType": "image/png", "buffer": picture("blue", "circle")}
    wait_results(page, "/search", lambda: page.set_input_files("#q-file", upload))
    first = page.locator("#search-results [data-kind=image] [data-id]").first
    expect(first).to_have_attribute("data-id", "dave-img-blue")
    expect(first.locator(".score")).to_have_text("1.00")
    assert float(first.get_attribute("data-score")) > 0.9999  # the same bytes: the same embedding
    expect(page.locator("#query-image-label")).to_have_text("blue.png")
    shot(page, "search-image")


def test_dropped_image_searches_and_result_click_searches_more_like_it(page, service):
    be(page, "erin")
    blob = base64.b64encode(picture("green", "rect")).decode()
    drop = """async (b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'green.png', {type: 'image/png'}));
        window.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, cancelable: true}));
    }"""
    wait_results(page, "/search", lambda: page.evaluate(drop, blob))
    expect(page.locator("#search-results [data-kind=image] [data-id]").first).to_have_attribute("data-id", "carol-img-green")

    show_all(page)
    text = page.locator("#search-results [data-kind=text] [data-id]").first
    caption, clicked = text.locator(".text").inner_text(), text.get_attribute("data-id")
    text.locator(MORE_LIKE_THIS).focus()
    wait_results(page, "/search", lambda: page.keyboard.press("Enter"))  # results work from the keyboard
    expect(page.locator("#q")).to_have_value(caption)
    assert clicked not in listed_ids(page, "text")  # more like this: the others, not the item itself
    expect(page.locator("#search-results [data-kind=text] [data-id]")).to_have_count(K)


def post_text(page, text: str) -> None:
    page.click("a[href='#post']")
    page.fill("#post-text", text)
    with page.expect_response("**/index"):
        page.click("#post-submit")
    expect(page.locator("#post-status")).to_contain_text("Posted")


def test_post_as_one_user_and_find_it_as_another(page, service):
    be(page, "alice")
    post_text(page, "a purple elephant riding a bicycle")
    teal = png_bytes((40, 190, 190), size=(160, 120), shape="circle")  # nobody else posted this one
    page.click("label[for=kind-image]")
    page.set_input_files("#post-file", {"name": "teal.png", "mimeType": "image/png", "buffer": teal})
    expect(page.locator("#post-preview")).to_be_visible()
    with page.expect_response("**/index"):
        page.click("#post-submit")
    expect(page.locator("#my-posts .my-post")).to_have_count(2)
    shot(page, "post")
    text_id = page.locator("#my-posts .my-post:has(.text)").get_attribute("data-id")
    image_id = page.locator("#my-posts .my-post:has(img)").get_attribute("data-id")
    assert text_id.startswith("alice-") and image_id.startswith("alice-")

    page.click("a[href='#search']")
    search_text(page, "a purple elephant riding a bicycle")  # alice's own posts are left out
    assert not {text_id, image_id} & set(listed_ids(page, "text") + listed_ids(page, "image"))

    be(page, "bob")  # changing the user re-runs the search with bob's exclusions
    first_text = page.locator("#search-results [data-kind=text] [data-id]").first
    expect(first_text).to_have_attribute("data-id", text_id)
    expect(first_text.locator(".owner")).to_have_text("@alice")
    expect(first_text.locator(".score")).to_have_text("1.00")
    wait_results(page, "/search", lambda: page.set_input_files(
        "#q-file", {"name": "teal.png", "mimeType": "image/png", "buffer": teal}))
    expect(page.locator("#search-results [data-kind=image] [data-id]").first).to_have_attribute("data-id", image_id)


def test_cutoff_slider_hides_results_below_it(page, service):
    be(page, "erin")
    search_text(page, "blue dots")
    items = page.locator("#search-results [data-score]")
    scores = sorted(float(s) for s in items.evaluate_all("items => items.map(i => i.dataset.score)"))
    assert len(scores) == 2 * K and scores[0] < scores[-1]
    show_all(page)
    expect(page.locator("#cutoff-value")).to_have_text("showing all")
    slider = page.locator("#cutoff")
    low, step = float(slider.get_attribute("min")), float(slider.get_attribute("step"))
    middle = scores[len(scores) // 2]
    slider.focus()
    for _ in range(int((middle - low) / step)):
        page.keyboard.press("ArrowRight")
    threshold = float(slider.input_value())
    visible = [float(s) for s in page.locator("#search-results [data-score]:visible").evaluate_all(
        "items => items.map(i => i.dataset.score)")]
    assert sorted(visible) == [s for s in scores if s >= threshold]
    assert 0 < len(visible) < len(scores)
    expect(page.locator("#cutoff-value")).to_have_text(f"≥ {threshold:.2f} · {len(scores) - len(visible)} hidden")
    shot(page, "cutoff")
    page.keyboard.press("Home")
    expect(page.locator("#search-results [data-score]:visible")).to_have_count(len(scores))
    page.keyboard.press("End")  # the best result stays: it is shown as the maximum
    best = max(scores, key=lambda s: round(s, 2))
    expect(page.locator(f"#search-results [data-score='{best}']")).to_be_visible()


def test_recommendations_are_grouped_by_the_interest_they_come_from(page, service):
    be(page, "carol")
    wait_results(page, "/recommend", lambda: page.click("a[href='#foryou']"))
    [doc] = service.post("/recommend", [{"id": "r"}], username="carol", k=K)
    expected = {}
    for group in (doc["from_text"], doc["from_image"]):
        for match in group["text_matches"] + group["image_matches"]:
            expected.setdefault(match["seed"], set()).add(match["id"])
    assert expected, "carol has posts: the service should recommend something"
    cards = page.locator("#foryou-results .interest")
    shown = {card.get_attribute("data-seed"): set(card.locator("[data-id]").evaluate_all(
        "items => items.map(i => i.dataset.id)")) for card in cards.all()}
    assert shown == expected
    assert not page.locator("#foryou-results .owner", has_text="@carol").count()
    shot(page, "recommend")

    be(page, "nobody")
    expect(page.locator("#foryou-results .notice.empty")).to_contain_text("no posts yet")


def test_service_errors_show_their_detail(page, service):
    broken = {"name": "broken.png", "mimeType": "image/png", "buffer": b"not a picture"}
    wait_results(page, "/search", lambda: page.set_input_files("#q-file", broken))
    expect(page.locator("#search-results .notice.error")).to_contain_text("could not use this query: uri:")

    shot(page, "error")
    not_image = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}
    page.set_input_files("#q-file", not_image)
    expect(page.locator("#search-results .notice.error")).to_contain_text("This file cannot be used")
    expect(page.locator("#search-results .notice.error")).to_contain_text("“notes.txt” is not an image")
    expect(page.locator("#search-results")).not_to_contain_text("Something went wrong")


def test_unreachable_service_is_reported(browser, service):
    context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone
    try:
        page = context.new_page()
        page.goto(f"{service.url}?api=http://127.0.0.1:{free_port()}")
        expect(page.locator("#offline")).to_contain_text("Cannot reach the crossmodal service")
        expect(page.locator("#service")).to_have_attribute("data-state", "offline")
        page.fill("#q", "red")
        page.press("#q", "Enter")
        expect(page.locator("#search-results .notice.offline")).to_contain_text("The service is not reachable")
        expect(page.locator("#offline")).to_contain_text("python app.py -t query")  # said once, in the banner
        shot(page, "offline-phone")
    finally:
        context.close()


@pytest.mark.parametrize("bad", ["0", "1001", "2.5", ""])
def test_results_per_kind_is_validated_and_never_stored_invalid(page, service, bad):
    be(page, "carol")
    page.fill("#k", "5")
    page.press("#k", "Tab")
    page.fill("#q", "red circle")
    wait_results(page, "/search", lambda: page.press("#q", "Enter"))
    expect(page.locator("#search-results [data-kind=image] [data-id]")).to_have_count(5)
    page.fill("#k", bad)
    expect(page.locator("#k-error")).to_be_visible()
    expect(page.locator("#k-error")).to_contain_text("whole number from 1 to 1000; using 5")
    expect(page.locator("#k")).to_have_attribute("aria-invalid", "true")
    wait_results(page, "/search", lambda: page.press("#q", "Enter"))  # still searches, with 5
    expect(page.locator("#search-results [data-kind=image] [data-id]")).to_have_count(5)
    expect(page.locator("#search-results .notice.error")).to_have_count(0)
    assert page.evaluate("localStorage.getItem('crossmodal.k')") == "5"
    page.locator("#q").focus()  # leaving the box puts the valid value back
    expect(page.locator("#k")).to_have_value("5")
    expect(page.locator("#k-error")).to_be_hidden()


@pytest.mark.parametrize("stored", ["0", "\"abc\"", "null", "1e9", "not json"])
def test_a_bad_stored_results_per_kind_is_recovered(browser, service, stored):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        context.add_init_script(f"localStorage.setItem('crossmodal.k', {json.dumps(stored)});"
                                "localStorage.setItem('crossmodal.user', '\"carol\"');")
        page = context.new_page()
        page.goto(service.url + "#foryou")
        expect(page.locator("#k")).to_have_value("12")
        expect(page.locator("#foryou-results .interest").first).to_be_visible()  # For you works
        expect(page.locator("#foryou-results .notice.error")).to_have_count(0)
        page.click("a[href='#search']")
        search_text(page, "blue square")
        expect(page.locator("#search-results [data-kind=image] [data-id]")).to_have_count(12)
        assert page.evaluate("localStorage.getItem('crossmodal.k')") == "12"
    finally:
        context.close()


def test_scores_in_words_and_no_close_match(page, service):
    [stats] = service.post("/stats", [])
    likely = stats["tags"]["relevance_threshold"]["text-image"]
    search_text(page, "a red circle")
    visible = page.locator("#search-results [data-kind=image] [data-score]:visible")
    assert visible.count() > 0
    for value in visible.evaluate_all("items => items.map(i => Number(i.dataset.score))"):
        assert round(value, 2) >= round(likely, 2)
    words = page.locator("#search-results [data-kind=image] [data-id]:visible .words")
    assert set(words.all_inner_texts()) <= {"close match", "likely match"} and words.count()
    expect(page.locator("#cutoff-value")).to_contain_text("likely matches")
    shot(page, "words")
    for nonsense in ("asdfghjkl", "a dog on the beach"):
        search_text(page, nonsense)
        expect(page.locator("#search-results .no-close")).to_be_visible()
        expect(page.locator("#search-results .no-close")).to_contain_text("No close match")
        expect(page.locator("#search-results [data-kind=image] [data-id]:visible")).to_have_count(0)
    shot(page, "no-close-match")
    show_all(page)  # the nearest results are still there for whoever wants them
    expect(page.locator("#search-results [data-kind=image] [data-id]:visible")).to_have_count(K)
    expect(page.locator("#search-results .no-close")).to_be_hidden()


def test_more_like_this_leaves_out_the_clicked_image_and_alt_text_says_what_it_shows(page, service):
    be(page, "erin")
    search_text(page, "one large red square on a white background")
    show_all(page)
    first = page.locator("#search-results [data-kind=image] [data-id]").first
    clicked = first.get_attribute("data-id")
    captions = {**demo_captions()}
    if clicked in captions:
        expect(first.locator("img")).to_have_attribute("alt", f"{captions[clicked]} (posted by "
                                                        f"{first.locator('.owner').inner_text()[1:]})")
    alts = page.locator("#search-results [data-kind=image] img").evaluate_all("imgs => imgs.map(i => i.alt)")
    assert sum(" on a " in a for a in alts) >= K // 2, alts  # demo images are described by their caption
    wait_results(page, "/search", lambda: first.locator(MORE_LIKE_THIS).click())
    expect(page.locator("#search-results [data-kind=image] [data-id]")).to_have_count(K)
    assert clicked not in listed_ids(page, "image")


def test_post_status_clears_when_switching_kind_or_deleting(page, service):
    be(page, "frank")
    post_text(page, "a note that will be deleted")
    page.click("label[for=kind-image]")
    expect(page.locator("#post-status")).to_be_empty()
    page.click("label[for=kind-text]")
    page.fill("#post-text", "another note")
    with page.expect_response("**/index"):
        page.click("#post-submit")
    expect(page.locator("#post-status")).to_contain_text("Posted")
    with page.expect_response("**/delete"):
        page.locator("#my-posts .my-post").first.get_by_role("button", name="Delete").click()
    expect(page.locator("#post-status")).to_be_empty()


def test_interests_are_named_by_the_posts_that_form_them(page, service):
    be(page, "dave")
    wait_results(page, "/recommend", lambda: page.click("a[href='#foryou']"))
    cards = page.locator("#foryou-results .interest")
    titles = cards.locator("h2").all_inner_texts()
    assert titles
    # an interest is named by dave's most typical post in it: one of his captions, or his picture
    named = [t for t in titles if t.startswith("Because you posted")]
    assert named, titles
    texts = (line.rsplit(",", 1) for line in (DEMO / "texts.csv").read_text().splitlines()[1:])
    captions = (line.split(",") for line in (DEMO / "captions.csv").read_text().splitlines()[1:])
    daves = set(CAPTIONS["dave"]) | {t for t, owner in texts if owner == "dave"} | {
        c for _, c, owner in captions if owner == "dave"}
    for title in named:
        assert title == "Because you posted this image" or title[len("Because you posted "):].strip("“”") in daves, title
    pictures = page.locator("#foryou-results .interest img.badge.picture")
    if "Because you posted this image" in titles:
        assert pictures.count() >= 1 and pictures.first.get_attribute("src").startswith("data:image/jpeg;base64,")
    # and says which of his posts form it, by their texts and pictures
    members = page.locator("#foryou-results .interest details.members")
    assert members.count() >= 1
    for i in range(members.count()):
        members.nth(i).locator("summary").click()
    listed = members.locator("li:not(.muted)")
    texts = [t.strip("“”") for t in members.locator("li:not(:has(img)):not(.muted)").all_inner_texts()]
    assert texts and set(texts) <= daves, texts
    assert members.locator("li img").count() >= 1 and listed.count() == len(texts) + members.locator("li img").count()
    expect(members.locator("li code")).to_have_count(0)  # every post described, none by id
    words = page.locator("#foryou-results .words").all_inner_texts()  # scores in words here too
    assert words and set(words) <= {"close match", "likely match", "weak match"}
    expect(page.locator("#foryou-results")).not_to_contain_text("a image")
    expect(page.locator("#foryou-results")).not_to_contain_text(re.compile(r"interest #|#\d"))
    shot(page, "foryou-named")


def test_phone_layout_keeps_posts_on_screen_and_points_to_the_texts(browser, service):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.goto(service.url)
        expect(page.locator("#service")).to_have_attribute("data-state", "online")
        be(page, "gina")
        page.click("a[href='#post']")
        page.fill("#post-text", "a very long post " * 20)
        with page.expect_response("**/index"):
            page.click("#post-submit")
        page.click("label[for=kind-image]")
        page.set_input_files("#post-file", {"name": "p.png", "mimeType": "image/png", "buffer": picture("red", "circle")})
        with page.expect_response("**/index"):
            page.click("#post-submit")
        expect(page.locator("#my-posts .my-post")).to_have_count(2)
        width = page.evaluate("document.documentElement.clientWidth")
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling
        for row in page.locator("#my-posts .my-post").all():
            box = row.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, box
            for name in ("Find similar", "Delete"):
                button = row.get_by_role("button", name=name).bounding_box()
                assert button["x"] + button["width"] <= width, (name, button)
        shot(page, "posts-phone")
        page.click("a[href='#search']")
        search_text(page, "red circle")
        jump = page.locator("#search-results .jump")
        expect(jump).to_be_visible()
        expect(jump).to_contain_text(f"{K} texts")
        assert jump.bounding_box()["y"] < 844  # said on the first screen
        jump.get_by_role("button", name=f"{K} texts").click()
        expect(page.locator("#text-results .section-title")).to_be_in_viewport()
        shot(page, "search-phone")
    finally:
        context.close()


def test_page_recovers_by_itself_after_the_service_restarts(browser, tmp_path):
    """Stop the service under an open page, then start it again: no clicks needed."""
    workspace, grpc, http = tmp_path / "ws", free_port(), free_port()
    model = ("--model", "tiny-clip", "--pretrained", "none")
    server = Server(workspace, grpc, http, *model).start()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        http_post(http, "/index", [{"id": "t1", "owner": "zoe", "modality": "text", "text": "hello"}])
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{http}/ui/")
        expect(page.locator("#service")).to_contain_text("1 text")
        server.stop()
        expect(page.locator("#service")).to_have_attribute("data-state", "offline", timeout=15_000)  # no stale counts
        page.fill("#q", "hello")
        page.press("#q", "Enter")
        expect(page.locator("#search-results .notice.offline")).to_be_visible()
        shot(page, "restart-offline")
        server = Server(workspace, grpc, http, *model).start()
        expect(page.locator("#service")).to_have_attribute("data-state", "online", timeout=15_000)
        expect(page.locator("#search-results [data-kind=text] [data-id]")).to_have_count(1, timeout=15_000)
        expect(page.locator("#offline")).to_be_hidden()
        page.click("a[href='#foryou']")
        expect(page.locator("#foryou-results .notice")).to_contain_text("Who are you?")
    finally:
        context.close()
        server.stop()


def _image_alts(page) -> list[tuple[str, str]]:
    return page.locator("#search-results [data-kind=image] img").evaluate_all(
        "imgs => imgs.map(i => [i.closest('[data-id]').dataset.id, i.alt])")


COLOUR_WORDS = ("red", "green", "blue", "yellow", "purple", "orange")


def _has(item: str, alt: str, colour: str) -> bool:
    """The demo images say their colour in the caption (alt), carol's and dave's in the id."""
    return f" {colour} " in f" {alt} {item.replace('-', ' ')} "


def _share(pairs, colour: str) -> float:
    return sum(_has(item, alt, colour) for item, alt in pairs) / max(len(pairs), 1)


def _mark(page, pairs, colour: str) -> set[str]:
    """Mark each shown image: those of ``colour`` relevant, everything else not."""
    for item, alt in pairs:
        kind = "positive" if _has(item, alt, colour) else "negative"
        page.locator(f"#search-results [data-id='{item}'] .mark.{kind}").click()
    return {item for item, _ in pairs}


def test_refine_with_marks_moves_results_towards_the_marked_kind(page, service):
    """Relevance feedback as a person gives it: mark, refine, mark again, refine, start over.

    The person wants circles of one colour: "circles" finds circles of every colour, they
    mark the ones of the colour they want relevant and the others not, twice. The demo data
    holds only about a dozen circles of each colour, so by round 2 most of them are marked
    (and marked items never come back): the second round is judged against what scrolling
    on would have shown instead, the plain search's next results.
    """
    search_text(page, "circles")
    show_all(page)  # broad queries score under the calibrated "likely" line
    first = _image_alts(page)
    colour = max(COLOUR_WORDS, key=lambda c: _share(first[:6], c))  # the colour they saw most of
    assert _share(first, colour) < 1, first  # room to improve
    expect(page.locator("#refine")).to_be_disabled()
    marked = _mark(page, first[:6], colour)
    expect(page.locator("#refine")).to_have_text("Refine (6 marks)")
    wait_results(page, "/refine", lambda: page.click("#refine"))
    show_all(page)
    second = _image_alts(page)
    shot(page, "refine-round-1")
    assert not marked & {item for item, _ in second}, "marked results came back"
    assert _share(second, colour) > _share(first, colour), (colour, first, second)
    expect(page.locator("#feedback-hint")).to_contain_text("Round 1")
    marked |= _mark(page, second[:6], colour)
    expect(page.locator("#refine")).to_have_text(f"Refine ({len(marked)} marks)")  # marks persist across rounds
    wait_results(page, "/refine", lambda: page.click("#refine"))
    show_all(page)
    third = _image_alts(page)
    shot(page, "refine-round-2")
    assert not marked & {item for item, _ in third}
    [plain] = service.post("/search", [{"id": "q", "text": "circles"}], k=3 * K)
    captions = demo_captions()
    scrolled = [(m["id"], captions.get(m["id"], "")) for m in plain["image_matches"][K:]]
    assert _share(second + third, colour) > _share(scrolled, colour), (colour, second + third, scrolled)
    expect(page.locator("#feedback-hint")).to_contain_text("Round 2")
    wait_results(page, "/search", lambda: page.click("#start-over"))
    expect(page.locator("#refine")).to_be_disabled()
    assert _image_alts(page) == first  # the plain search again, marks gone
