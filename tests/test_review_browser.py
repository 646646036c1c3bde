"""The review page in a real browser (Debian's chromium through its chromedriver, headless), against
answers the real Slack bot recorded (Bolt app, Slack stand-in, the real Weaviate and Ollama):
log in, filter the inbox to 👎, open the answer, see its passages, correct it and name the cause,
log out; the correction is in `teambot feedback export`, and once approved it answers a paraphrase
of the question in Slack at once, marked as reviewed. A stored script in a question does not run.
The screenshots in the README are the ones this test takes (TEAMBOT_UPDATE_SCREENSHOTS=1 writes them to
docs/screenshots/)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from bots.slack.blocks import CORRECTION_BLOCK, REASON_BLOCK, REVIEWED_MARK
from core.answer import Answer, Source
from feedback.store import FeedbackStore
from pipeline.querying import AnswerService
from teambot.cli import app
from testing import slack_standin as slack
from tests.feedback_data import seed_feedback
from tests.slack_harness import slack_http_bot, with_slack_secrets
from testing.slack_standin import SlackStandIn
from tests.waiting import wait_until

# The README's screenshots are refreshed with TEAMBOT_UPDATE_SCREENSHOTS=1; otherwise they go to a temp dir.
DOCS_SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PASSWORD = "a long reviewer passphrase"
QUESTION = "How many days of paid vacation do full-time employees get?"
PARAPHRASE = "How many paid vacation days do full-time employees get?"
CORRECTION = "Full-time employees get 28 days of paid vacation per calendar year, plus public holidays [1]."
XSS = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 1"> Is there a deploy freeze?'
CHANNEL = "C0REVIEW"


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("chromium and chromedriver are not installed: run `make bootstrap` (Debian packages)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100",
                     "--force-device-scale-factor=1", "--lang=en-US"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


@pytest.fixture(scope="module")
def recorded(services, handbook, tmp_path_factory):
    """A feedback database the Slack bot filled: two answered questions, one 👎 with a reason and
    a correction; plus the rated handbook answers of tests/feedback_data.py (enough to export)."""
    data_dir = tmp_path_factory.mktemp("review")
    store_url = f"sqlite:///{data_dir / 'feedback.db'}"
    settings = with_slack_secrets(services, data_dir=data_dir, feedback_db_url=SecretStr(store_url),
                                  channel_collections={CHANNEL: handbook.collection}, document_votes_refresh=0.0,
                                  user_questions_per_minute=0, channel_questions_per_minute=0)
    store = FeedbackStore(store_url, user_salt="test")
    service = AnswerService(settings)  # its own: the bots hand it this store's reviews
    standin = SlackStandIn().start()
    with slack_http_bot(settings, service, store, standin) as bot:
        vacation = bot.ask(QUESTION, channel=CHANNEL)
        assert vacation.answer_id and "28" in vacation.text
        assert bot.interaction(slack.feedback_click(vacation.last, "down", user="U0BOB")).status_code == 200
        form = bot.standin.wait_call("views.open")
        assert bot.interaction(slack.view_submission(form.args["view"], {
            REASON_BLOCK: "It should say per calendar year, and mention public holidays.",
            CORRECTION_BLOCK: "28 days a year.",
        }, user="U0BOB")).status_code == 200
        bot.settle()
        seed_feedback(store)
        _spread_over_three_weeks(store, data_dir)
        # What a user typed, stored as the bots store it: a script in the question.
        source = Source(number=1, title="Deploys: when", path="handbook/deploys/windows.html", snippet="Deploy freeze…",
                        chunk_id="w-0", score=0.74)
        xss = Answer(question=XSS, text="Yes, from December 20th to January 3rd [1].", sources=[source],
                     retrieved=[source], model="teambot-dev", collection=handbook.collection,
                     prompt=[{"role": "user", "content": XSS}])
        store.record_answer(xss, platform="slack", user_id="U0EVE", channel=CHANNEL, thread=xss.id)
        store.rate(xss.id, platform="slack", user_id="U0EVE", value=-1, reason="<b>bold</b> <script>alert(1)</script>")
        yield settings, store, bot, vacation.answer_id, xss.id
    standin.stop()
    service.close()


def _spread_over_three_weeks(store: FeedbackStore, data_dir: Path) -> None:
    """The rated handbook answers as if asked over three weeks, the last one answered by a fine-tune
    published and activated a week ago (what the quality page's timeline is for)."""
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import text

    now = datetime.now(timezone.utc).replace(microsecond=0)
    with store.engine.begin() as connection:
        ids = [row[0] for row in connection.execute(text(
            "SELECT id FROM answers WHERE collection = 'Handbook' ORDER BY created_at"))]
        for i, answer_id in enumerate(ids):
            age = (i * 20) // max(len(ids) - 1, 1)  # the 👎-only answers (recorded last) the oldest
            model = "teambot-ft-demo" if age < 7 else "teambot-dev"
            connection.execute(text("UPDATE answers SET created_at = :at, model = :model WHERE id = :id"),
                               {"at": now - timedelta(days=age, hours=i % 5), "model": model, "id": answer_id})
    week_ago = (now - timedelta(days=7)).isoformat()
    run = data_dir / "runs" / "demo"
    run.mkdir(parents=True)
    (run / "published.json").write_text(json.dumps({"model": "teambot-ft-demo", "published_at": week_ago}))
    (data_dir / "active_model.json").write_text(json.dumps({
        "model": "teambot-ft-demo", "previous": ["teambot-dev"],
        "events": [{"at": week_ago, "event": "activated", "model": "teambot-ft-demo"}],
    }))


@pytest.fixture(scope="module")
def review_page(recorded):
    from bots.wsgi import wsgi_server
    from review.app import create_app

    settings, store, *_ = recorded
    env = {"TEAMBOT_DATA_DIR": str(settings.data_dir), "TEAMBOT_FEEDBACK_DB_URL": settings.feedback_db_url.get_secret_value()}
    made = CliRunner().invoke(app, ["review", "add-user", "maria", "--password-stdin"], input=PASSWORD + "\n", env=env)
    assert made.exit_code == 0, made.output
    server = wsgi_server(create_app(settings, store), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", env
    server.shutdown()
    server.server_close()


# Form controls with no label, no aria-label, and (buttons) no text of their own.
UNLABELLED = """
return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
               && !(e.tagName === 'BUTTON' && e.textContent.trim()))
  .map(e => e.outerHTML.slice(0, 100));
"""


def test_a_reviewer_corrects_a_bad_answer_in_the_browser_and_it_pays_off_twice(recorded, review_page, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as until
    from selenium.webdriver.support.ui import Select, WebDriverWait

    settings, store, bot, answer_id, xss_id = recorded
    base, env = review_page
    screenshots = DOCS_SCREENSHOTS if os.environ.get("TEAMBOT_UPDATE_SCREENSHOTS") == "1" else tmp_path
    screenshots.mkdir(parents=True, exist_ok=True)
    browser = _browser()
    wait = WebDriverWait(browser, 30)
    try:
        browser.get(base + "/quality")
        assert browser.current_url.startswith(base + "/login")  # no page without a session
        browser.find_element(By.ID, "name").send_keys("maria")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "login").click()
        wait.until(until.url_to_be(base + "/quality"))  # back where it was going

        browser.get(base + "/?vote=any")
        Select(browser.find_element(By.ID, "vote")).select_by_value("down")
        browser.find_element(By.ID, "apply").click()
        wait.until(until.url_contains("vote=down"))
        questions = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#inbox a.question")]
        assert QUESTION in questions and XSS.strip() in questions  # shown as text, not run
        assert "How do I submit an expense claim?" not in questions  # a 👍 answer
        assert browser.execute_script("return window.pwned") is None
        browser.save_screenshot(str(screenshots / "review-inbox.png"))

        browser.find_element(By.LINK_TEXT, QUESTION).click()
        wait.until(until.presence_of_element_located((By.ID, "review")))
        passages = browser.find_elements(By.CSS_SELECTOR, "#passages tbody tr")
        assert passages and any("vacation" in row.text.lower() for row in passages)
        assert any(row.get_attribute("class") == "cited" for row in passages)
        assert "It should say per calendar year" in browser.find_element(By.ID, "votes").text
        correction = browser.find_element(By.ID, "correction")
        correction.clear()
        correction.send_keys(CORRECTION)
        Select(browser.find_element(By.ID, "cause")).select_by_value("wrong_despite_passage")
        # Approved and saved from the keyboard (Alt+A, Ctrl+Enter), as the page says.
        keys = ActionChains(browser)
        keys.key_down(Keys.ALT).send_keys("a").key_up(Keys.ALT)
        keys.key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
        wait.until(until.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash.ok"), "Saved"))
        assert browser.find_element(By.ID, "approved").is_selected()
        assert "maria set the correction to" in browser.find_element(By.ID, "events").text  # in words
        browser.save_screenshot(str(screenshots / "review-answer.png"))

        # Every control is labelled (what a screen reader announces), and on a 390 px phone the
        # inbox and the answer need no sideways scrolling (wide tables scroll inside themselves).
        for path in ("/?vote=any&reviewed=any", f"/answers/{answer_id}", "/gaps"):
            browser.get(base + path)
            assert browser.execute_script(UNLABELLED) == [], path
        browser.set_window_size(390, 844)
        try:
            for path, name in (("/?vote=any&reviewed=any", "inbox"), (f"/answers/{answer_id}", "answer")):
                browser.get(base + path)
                assert browser.execute_script("return document.documentElement.scrollWidth") <= \
                    browser.execute_script("return window.innerWidth"), path
                browser.save_screenshot(str(screenshots / f"review-{name}-phone.png"))
        finally:
            browser.set_window_size(1400, 1100)

        browser.get(f"{base}/answers/{xss_id}")
        assert "<script>window.pwned" in browser.find_element(By.ID, "question").text
        assert "<b>bold</b>" in browser.find_element(By.ID, "votes").text
        assert browser.execute_script("return window.pwned") is None

        browser.get(base + "/quality")
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".chart.drawn")) == 4)
        assert browser.find_elements(By.CSS_SELECTOR, "#chart-votes .main-svg")  # drawn by plotly.js
        browser.save_screenshot(str(screenshots / "review-quality.png"))

        browser.find_element(By.ID, "logout").click()
        wait.until(until.url_contains("/login"))
        browser.get(base + "/")
        assert browser.current_url.startswith(base + "/login")
    finally:
        browser.quit()

    # At the next fine-tune: the reviewer's correction is the training target.
    exported = CliRunner().invoke(app, ["feedback", "export", "--collections", f"Handbook,{settings.channel_collections[CHANNEL]}"],
                                  env={**env, "TEAMBOT_TRAIN_BASE_MODEL": "gemma3-270m"})
    assert exported.exit_code == 0, exported.output
    rows = [json.loads(line) for split in ("train", "dev", "test")
            for line in (settings.data_dir / "sft" / f"{split}.jsonl").read_text().splitlines()]
    reviewed = [r for r in rows if r["answer_id"] == answer_id]
    assert [(r["kind"], r["messages"][-1]["content"]) for r in reviewed] == [("reviewed", CORRECTION)]

    # At once: a paraphrase asked in Slack gets the approved correction, marked as reviewed (from
    # the bots' next background read of the reviewed answers).
    wait_until(lambda: bot.service.reviewed_match(PARAPHRASE, settings.channel_collections[CHANNEL]), timeout=15)
    reply = bot.ask(PARAPHRASE, channel=CHANNEL, user="U0CAROL")
    assert CORRECTION in reply.text
    assert any(REVIEWED_MARK in json.dumps(block, ensure_ascii=False) for block in reply.blocks)
    assert store.get_answer(reply.answer_id).model == "reviewed"


EXPENSES = "Which tool do expense claims go in?"
HELP_RULES = """
[channels.C0HELP]
respond_to = "questions"
expert_users = ["U0MARIA"]
collections = ["{collection}"]

[channels.G0PRIVHELP]
respond_to = "questions"
expert_users = ["U0MARIA"]
collections = ["{collection}"]
"""


def test_an_experts_reply_becomes_the_reviewed_answer_through_the_browser_and_a_private_one_stays_private(
        services, handbook, tmp_path):
    """A question, 👎, "I need more help", the expert's two-message reply, resolved → the draft on the
    review page → edited and approved with the keyboard in Chromium → the same question asked in
    another thread gets the expert's answer, marked reviewed. The same in a private channel: its
    approved draft is served there, never in the public channel."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as until
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from bots.slack.blocks import HANDOFF, RESOLVE
    from feedback.reviews import ReviewStore
    from review.app import create_app
    from bots.wsgi import wsgi_server
    from testing.slack_standin import button_click

    rules = tmp_path / "rules.toml"
    rules.write_text(HELP_RULES.replace("{collection}", handbook.collection))
    store_url = f"sqlite:///{tmp_path / 'feedback.db'}"
    settings = with_slack_secrets(services, data_dir=tmp_path, feedback_db_url=SecretStr(store_url), channel_rules=rules,
                                  document_votes_refresh=0.0, user_questions_per_minute=0, channel_questions_per_minute=0)
    store = FeedbackStore(store_url, user_salt="test")
    reviews = ReviewStore(store)
    assert reviews.add_reviewer("maria", PASSWORD)
    service = AnswerService(settings)
    standin = SlackStandIn().start()
    server = wsgi_server(create_app(settings, store), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    expert_words = {"C0HELP": ("<@U0ALICE> They go in Ledgerly, within 30 days.", "Travel is booked in Navan instead."),
                    "G0PRIVHELP": ("<@U0ALICE> In Ledgerly; the finance team's code is FIN-PRIV-42.",)}
    try:
        with slack_http_bot(settings, service, store, standin) as bot:
            def hand_off(channel: str, kind: str) -> str:
                reply = bot.answered(slack.channel_message(EXPENSES, channel=channel, user="U0ALICE", channel_type=kind))
                bot.interaction(slack.feedback_click(reply.last, "down", user="U0ALICE"))
                bot.interaction(button_click(standin, reply.last, HANDOFF, user="U0ALICE"))
                thread = reply.last.thread_ts
                handoff = standin.wait_for(lambda _c: [m for m in standin.thread(channel, thread) if m.button(RESOLVE)])[0]
                for words in expert_words[channel]:
                    bot.event(slack.channel_message(words, channel=channel, user="U0MARIA", thread_ts=thread,
                                                    channel_type=kind))
                bot.interaction(button_click(standin, handoff, RESOLVE, user="U0MARIA"))
                standin.wait_call("chat.update", ts=handoff.ts)
                return reply.answer_id

            public_id, private_id = hand_off("C0HELP", "channel"), hand_off("G0PRIVHELP", "group")
            browser = _browser()
            wait = WebDriverWait(browser, 30)
            try:
                browser.get(base + "/login")
                browser.find_element(By.ID, "name").send_keys("maria")
                browser.find_element(By.ID, "password").send_keys(PASSWORD)
                browser.find_element(By.ID, "login").click()
                wait.until(until.presence_of_element_located((By.ID, "inbox")))
                Select(browser.find_element(By.ID, "vote")).select_by_value("expert")
                browser.find_element(By.ID, "apply").click()
                wait.until(until.url_contains("vote=expert"))
                assert len(browser.find_elements(By.CSS_SELECTOR, "#inbox a.question")) == 2
                browser.get(f"{base}/answers/{public_id}")
                draft = browser.find_element(By.ID, "expert-answer").text
                assert draft == "They go in Ledgerly, within 30 days.\n\nTravel is booked in Navan instead."
                correction = browser.find_element(By.ID, "correction")
                assert correction.get_attribute("value") == draft  # the review starts from it
                correction.send_keys(Keys.END, " Receipts are scanned into the claim.")
                keys = ActionChains(browser)
                keys.key_down(Keys.ALT).send_keys("a").key_up(Keys.ALT)
                keys.key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
                wait.until(until.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash.ok"), "Saved"))
                shots = DOCS_SCREENSHOTS if os.environ.get("TEAMBOT_UPDATE_SCREENSHOTS") == "1" else tmp_path
                browser.execute_script("document.getElementById('expert-answer').parentElement.scrollIntoView()")
                browser.save_screenshot(str(shots / "review-expert-draft.png"))
            finally:
                browser.quit()
            approved = reviews.review(public_id)
            assert approved.approved and approved.correction.endswith("Receipts are scanned into the claim.")
            # The private draft, approved as it stands.
            reviews.save_review(private_id, "maria", correction=reviews.expert_draft(private_id).text, cause=None,
                                exclude=False, approved=True)

            wait_until(lambda: service.reviewed_match(EXPENSES, handbook.collection, ("slack", "G0PRIVHELP"))
                       and "FIN-PRIV-42" in service.reviewed_match(EXPENSES, handbook.collection,
                                                                  ("slack", "G0PRIVHELP"))[0].correction, timeout=30)
            again = bot.answered(slack.channel_message(EXPENSES, channel="C0HELP", user="U0CAROL"))
            assert "Travel is booked in Navan instead." in again.text and "FIN-PRIV-42" not in again.text
            assert any(REVIEWED_MARK in json.dumps(block, ensure_ascii=False) for block in again.blocks)
            assert store.get_answer(again.answer_id).model == "reviewed"
            inside = bot.answered(slack.channel_message(EXPENSES, channel="G0PRIVHELP", user="U0CAROL",
                                                        channel_type="group"))
            assert "FIN-PRIV-42" in inside.text
            assert "FIN-PRIV-42" not in "\n".join(str(c.args) for c in standin.find_all("C0HELP"))
    finally:
        server.shutdown()
        server.server_close()
        standin.stop()
        service.close()
