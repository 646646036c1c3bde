"""The review page through Flask's test client, on SQLite and PostgreSQL: login, lockout and
sessions, CSRF on every form, escaping, the inbox filters, reviews with their audit trail, document
overrides, the quality data, and what reviews change in the training export and in retrieval.
(tests/test_review_browser.py drives it in a real browser against answers the Slack bot recorded.)"""

from __future__ import annotations

import gzip
import re
import time

import pytest

from core.answer import Answer, Outcome, Source
from core.settings import load_settings
from feedback.reviews import MAX_FAILED_LOGINS, ReviewError, ReviewStore, check_password, hash_password
from feedback.store import FeedbackStore
from review.app import FAILED_LOGIN_DELAY, create_app
from tests.waiting import wait_until

PASSWORD = "correct horse battery"
XSS = '<script>window.pwned = 1</script><img src=x onerror="window.pwned=1">'


def _answer(store, question, text, *, votes=(), collection="Handbook", model="teambot-dev", path="handbook/a.md",
            reason=None, outcome=Outcome.ANSWERED):
    source = Source(number=1, title="A page", path=path, snippet=f"passage of {path}", chunk_id="c1", score=0.71)
    answer = Answer(question=question, text=text, sources=[source], retrieved=[source], model=model,
                    collection=collection, outcome=outcome, prompt=[{"role": "user", "content": question}])
    store.record_answer(answer, platform="slack", user_id="asker", channel="C1", thread=answer.id)
    for user, value in enumerate(votes):
        store.rate(answer.id, platform="slack", user_id=f"U{user}", value=value, reason=reason if value < 0 else None)
    return answer.id


@pytest.fixture
def page(store_url, tmp_path):
    settings = load_settings(data_dir=tmp_path)
    store = FeedbackStore(store_url, user_salt="test")
    reviews = ReviewStore(store)
    assert reviews.add_reviewer("maria", PASSWORD)
    app = create_app(settings, store)
    app.config["TESTING"] = False  # CSRF stays on
    ids = {
        "bad": _answer(store, "How many vacation days do I get?", "10 days.", votes=(-1, -1), reason="Wrong number"),
        "good": _answer(store, "When is the Lisbon office open?", "07:30–20:00 [1].", votes=(1,), collection="Lisbon",
                        model="teambot-ft-1"),
        "none": _answer(store, "Who approves my vacation?", "Your manager [1]."),
        "xss": _answer(store, XSS, f"Answer with {XSS}", votes=(-1,), reason=XSS, path="handbook/<b>x</b>.md"),
    }
    yield app.test_client(), store, reviews, ids
    store.engine.dispose()


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _login(client, name="maria", password=PASSWORD):
    form = client.get("/login").get_data(as_text=True)
    return client.post("/login", data={"name": name, "password": password, "csrf_token": _csrf(form)})


def test_nothing_is_reachable_without_a_session(page):
    client, _, _, ids = page
    for path in ("/", f"/answers/{ids['bad']}", "/quality", "/charts.js", "/?vote=any&page=2"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login"), path
    for path in (f"/answers/{ids['bad']}", "/documents", "/logout"):
        response = client.post(path, data={"correction": "x"})
        assert response.status_code in (302, 400), path  # refused: no session (and no CSRF token)
    assert ReviewStore(page[1]).review(ids["bad"]) is None
    assert client.get("/healthz").status_code == 200


def test_login_logout_and_a_session_cookie_a_script_cannot_read(page):
    client, *_ = page
    response = _login(client)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # served on loopback; beyond it the cookie is Secure (below)
    inbox = client.get("/")
    assert inbox.status_code == 200 and "maria" in inbox.get_data(as_text=True)
    assert "script-src 'self'" in inbox.headers["Content-Security-Policy"]
    logout = client.post("/logout", data={"csrf_token": _csrf(inbox.get_data(as_text=True))})
    assert logout.status_code == 302 and client.get("/").status_code == 302


def test_cookies_are_secure_beyond_loopback_and_login_never_redirects_off_site(store_url, tmp_path):
    settings = load_settings(data_dir=tmp_path, review_host="0.0.0.0")
    store = FeedbackStore(store_url, user_salt="test")
    ReviewStore(store).add_reviewer("maria", PASSWORD)
    client = create_app(settings, store).test_client()
    for target in ("//evil.example/phish", "/\\evil.example/phish", "https://evil.example/"):
        form = client.get("/login").get_data(as_text=True)
        response = client.post("/login", query_string={"next": target},
                               data={"name": "maria", "password": PASSWORD, "csrf_token": _csrf(form)})
        assert response.headers["Location"] == "/", target  # never off this site
    assert "Secure" in response.headers["Set-Cookie"]
    store.engine.dispose()


def test_wrong_passwords_are_delayed_and_lock_the_account(page):
    client, store, reviews, _ = page
    started = time.monotonic()
    wrong = _login(client, password="not the password")
    assert wrong.status_code == 401 and time.monotonic() - started >= FAILED_LOGIN_DELAY
    assert "Wrong name or password" in wrong.get_data(as_text=True)
    unknown = _login(client, name="nobody")
    assert unknown.status_code == 401 and "Wrong name or password" in unknown.get_data(as_text=True)
    for _ in range(MAX_FAILED_LOGINS - 1):
        reviews.login("maria", "still wrong")
    locked = _login(client)  # the right password, too late
    assert locked.status_code == 401 and "too many failed logins" in locked.get_data(as_text=True)
    assert client.get("/").status_code == 302
    reviews.add_reviewer("maria", PASSWORD + "!")  # an admin sets a new password: unlocked
    assert _login(client, password=PASSWORD + "!").status_code == 302


def test_a_new_password_or_a_lock_ends_the_sessions_already_open(page):
    client, store, reviews, _ = page
    _login(client)
    assert client.get("/").status_code == 200
    reviews.add_reviewer("maria", PASSWORD + " new")  # e.g. after a laptop was lost
    assert client.get("/").status_code == 302
    _login(client, password=PASSWORD + " new")
    assert client.get("/").status_code == 200
    for _ in range(MAX_FAILED_LOGINS):  # someone else guessing locks the account
        reviews.login("maria", "guess")
    assert client.get("/").status_code == 302


def test_passwords_are_stored_as_scrypt_hashes():
    stored = hash_password(PASSWORD)
    assert stored.startswith("scrypt$") and PASSWORD not in stored
    assert check_password(PASSWORD, stored) and not check_password(PASSWORD + "x", stored)
    assert hash_password(PASSWORD) != stored  # salted


def test_a_form_without_its_csrf_token_is_refused(page):
    client, store, reviews, ids = page
    _login(client)
    refused = client.post(f"/answers/{ids['bad']}", data={"correction": "28 days [1].", "cause": "wrong_passage"})
    assert refused.status_code == 400 and "refused" in refused.get_data(as_text=True)
    forged = client.post(f"/answers/{ids['bad']}", data={"correction": "28 days [1].", "csrf_token": "forged"})
    assert forged.status_code == 400
    assert reviews.review(ids["bad"]) is None
    assert client.post("/documents", data={"collection": "Handbook", "path": "handbook/a.md", "action": "hide"}).status_code == 400
    assert reviews.document_overrides("Handbook") == {}


def test_the_answer_view_shows_what_a_follow_up_was_searched_as(page, store_url):
    client, store, _, ids = page
    _login(client)
    source = Source(number=1, title="On-call", path="handbook/on-call.md", snippet="15 minutes", chunk_id="c", score=0.6)
    follow = Answer(question="How long until it escalates?", text="15 minutes [1].", sources=[source], retrieved=[source],
                    model="teambot-dev", collection="Handbook", searched=f"How long until it escalates?\n{XSS}")
    store.record_answer(follow, platform="slack", user_id="asker", channel="C1", thread="t1")
    html = client.get(f"/answers/{follow.id}").get_data(as_text=True)
    assert 'id="searched"' in html and "How long until it escalates?" in html
    assert XSS not in html and "&lt;script&gt;" in html
    assert 'id="searched"' not in client.get(f"/answers/{ids['bad']}").get_data(as_text=True)


def test_the_answer_view_shows_the_draft_of_an_answer_its_passages_did_not_support(page):
    client, store, _, ids = page
    _login(client)
    replaced = Answer(question="When is payday?", text="I don't know from the documents I have.", sources=[],
                      model="teambot-dev", collection="Handbook", outcome=Outcome.UNGROUNDED,
                      draft=f"Payday is the 25th, according to the documents. {XSS}")
    store.record_answer(replaced, platform="slack", user_id="asker", channel="C1", thread="t2")
    html = client.get(f"/answers/{replaced.id}").get_data(as_text=True)
    assert 'id="draft"' in html and "Payday is the 25th" in html and "outcome ungrounded" in html
    assert XSS not in html
    assert 'id="draft"' not in client.get(f"/answers/{ids['bad']}").get_data(as_text=True)


def test_user_text_is_escaped_everywhere_it_is_shown(page):
    client, _, _, ids = page
    _login(client)
    for path in ("/?vote=any", f"/answers/{ids['xss']}"):
        html = client.get(path).get_data(as_text=True)
        assert "<script>window.pwned" not in html and '<img src=x onerror' not in html, path
        assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in html, path
    quality = client.get("/quality").get_data(as_text=True)
    assert "<b>x</b>" not in quality and "&lt;b&gt;x&lt;/b&gt;" in quality  # the document table
    assert "</script><script" not in quality.replace('</script>\n<script', "")  # no break-out of the chart data


def test_the_inbox_filters_pages_and_puts_the_worst_first(page):
    client, store, reviews, ids = page
    _login(client)
    for i in range(30):  # more 👎 answers than a page holds
        _answer(store, f"Question {i:02d}?", "Wrong.", votes=(-1,))
    html = client.get("/?vote=down&reviewed=any").get_data(as_text=True)  # 👎 more than 👍
    assert "32 answers" in html and "How many vacation days do I get?" in html  # 2 × 👎 first
    assert html.index("How many vacation days") < html.index("Question 29?")  # then the newest of one 👎 each
    assert "When is the Lisbon office open?" not in html
    second = client.get("/?vote=down&page=2").get_data(as_text=True)
    assert "page 2 of 2" in second and second.count('class="question"') == 7
    assert "When is the Lisbon office open?" in client.get("/?vote=up").get_data(as_text=True)
    assert "Who approves my vacation?" in client.get("/?vote=none").get_data(as_text=True)
    with_reason = client.get("/?vote=any&has_reason=on").get_data(as_text=True)
    assert "2 answers" in with_reason and "Question 00?" not in with_reason
    assert "1 answer<" in client.get("/?vote=any&collection=Lisbon").get_data(as_text=True)
    assert "1 answer<" in client.get("/?vote=any&model=teambot-ft-1").get_data(as_text=True)
    assert "0 answers" in client.get("/?vote=any&since=2099-01-01").get_data(as_text=True)
    reviews.save_review(ids["bad"], "maria", correction="28 days [1].", cause=None, exclude=False, approved=False)
    assert "31 answers" in client.get("/?reviewed=no").get_data(as_text=True)
    assert "1 answer<" in client.get("/?reviewed=yes").get_data(as_text=True)


def test_a_review_is_saved_with_its_trail_and_changes_the_training_export(page, tmp_path):
    from training.export import build_examples

    client, store, reviews, ids = page
    _login(client)
    html = client.get(f"/answers/{ids['bad']}").get_data(as_text=True)
    assert "Wrong number" in html and "passage of handbook/a.md" in html and "0.710" in html and "cited" in html
    saved = client.post(f"/answers/{ids['bad']}", follow_redirects=True, data={
        "csrf_token": _csrf(html), "correction": "Full-time employees get 28 days [1].", "cause": "wrong_despite_passage",
        "approved": "on",
    })
    assert "Saved (correction, cause, approved)" in saved.get_data(as_text=True)
    client.post(f"/answers/{ids['good']}", data={"csrf_token": _csrf(html), "exclude": "on"})
    events = reviews.events(f"answer:{ids['bad']}")
    assert {(e.field, e.old, e.new, e.reviewer) for e in events} == {
        ("correction", None, "Full-time employees get 28 days [1].", "maria"),
        ("cause", None, "wrong_despite_passage", "maria"), ("approved", "false", "true", "maria"),
    }
    page_after = client.get(f"/answers/{ids['bad']}").get_data(as_text=True)
    assert "Full-time employees get 28 days [1]." in page_after
    assert "maria set the correction to “Full-time employees get 28 days [1].”" in page_after  # history in words
    assert "maria approved the correction to be served" in page_after
    # An approved correction must exist; an unknown cause is refused.
    with pytest.raises(ReviewError):
        reviews.save_review(ids["none"], "maria", correction="", cause=None, exclude=False, approved=True)
    with pytest.raises(ReviewError):
        reviews.save_review(ids["none"], "maria", correction="x", cause="bad luck", exclude=False, approved=False)

    settings = load_settings(data_dir=tmp_path, train_base_model="gemma3-270m", train_max_tokens=512)
    result = build_examples(settings, store, embed=_no_embedding, collections={"Handbook", "Lisbon"})
    examples = {e["question"]: e for split in ("train", "dev", "test") for e in getattr(result, split)}
    reviewed = examples["How many vacation days do I get?"]
    assert reviewed["messages"][-1]["content"] == "Full-time employees get 28 days [1]." and reviewed["kind"] == "reviewed"
    assert "When is the Lisbon office open?" not in examples and result.dropped["excluded"] == 1
    pairs = [p for rows in result.preference.dpo.values() for p in rows]
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs
            if p["question"] == "How many vacation days do I get?"] == [("Full-time employees get 28 days [1].", "10 days.")]
    # A reviewer's correction outranks a user's.
    store.rate(ids["bad"], platform="slack", user_id="U0", value=-1, correction="It is 30 days.")
    again = build_examples(settings, store, embed=_no_embedding, collections={"Handbook", "Lisbon"})
    assert {e["question"]: e for s in ("train", "dev", "test") for e in getattr(again, s)}[
        "How many vacation days do I get?"]["messages"][-1]["content"] == "Full-time employees get 28 days [1]."


def _no_embedding(texts):
    import numpy as np

    return np.eye(len(texts), dtype=np.float32)  # no two questions alike


def test_reviewers_demote_or_hide_a_document_and_retrieval_applies_it(page):
    from haystack import Document

    from pipeline.boosts import FeedbackBoost

    client, store, reviews, ids = page
    _login(client)
    html = client.get(f"/answers/{ids['bad']}").get_data(as_text=True)
    back = f"/answers/{ids['bad']}"
    client.post("/documents", data={"csrf_token": _csrf(html), "collection": "Handbook", "path": "handbook/a.md",
                                    "action": "hide", "back": back})
    client.post("/documents", data={"csrf_token": _csrf(html), "collection": "Handbook", "path": "handbook/b.md",
                                    "action": "demote", "back": back})
    assert reviews.document_overrides("Handbook") == {"handbook/a.md": "hide", "handbook/b.md": "demote"}
    assert [e.new for e in reviews.events("document:Handbook:handbook/a.md")] == ["hide"]
    boost = FeedbackBoost("Handbook", 3, 2.0, votes=lambda c: {}, refresh_s=0, overrides=reviews.document_overrides)
    wait_until(boost.boosts, timeout=10)  # read in the background
    ranked = boost.run(documents=[
        Document(content="a", meta={"source": "handbook/a.md"}, score=0.9),
        Document(content="b", meta={"source": "handbook/b.md"}, score=0.8),
        Document(content="c", meta={"source": "handbook/c.md"}, score=0.5),
    ])["documents"]
    assert [d.meta["source"] for d in ranked] == ["handbook/c.md", "handbook/b.md"]  # a hidden, b at 0.5×
    client.post("/documents", data={"csrf_token": _csrf(html), "collection": "Handbook", "path": "handbook/a.md",
                                    "action": "", "back": back})
    assert reviews.document_overrides("Handbook") == {"handbook/b.md": "demote"}


def test_the_quality_page_charts_votes_abstentions_causes_and_documents(page):
    import json

    client, store, reviews, ids = page
    _login(client)
    _answer(store, "What is our share price?", "I don't know from the documents I have.", outcome=Outcome.ABSTAINED)
    reviews.save_review(ids["bad"], "maria", correction="28 days [1].", cause="wrong_passage", exclude=False, approved=False)
    data = reviews.quality(days=7, today=store.get_answer(ids["bad"]).created_at.date())  # not "now": midnight
    dev, tuned = data.models["teambot-dev"], data.models["teambot-ft-1"]
    assert sum(dev["answers"]) == 4 and sum(dev["down"]) == 3 and sum(tuned["up"]) == 1
    assert dev["abstention_rate"][-1] == pytest.approx(1 / 4) and tuned["up_rate"][-1] == 1.0
    assert data.causes["wrong_passage"][-1] == 1
    assert data.documents[0][1:3] == ("handbook/a.md", 2)
    html = client.get("/quality").get_data(as_text=True)
    figures = {m.group(1): json.loads(m.group(2)) for m in re.finditer(
        r'data-target="chart-(\w+)">(.*?)</script>', html, re.S)}
    assert set(figures) == {"votes", "abstention", "causes", "documents"}
    assert any(t["name"] == "teambot-dev: up-vote rate" for t in figures["votes"]["data"])
    script = client.get("/charts.js")
    assert script.status_code == 200 and b"plotly" in script.data[:2000].lower()
    packed = client.get("/charts.js", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert packed.headers["Content-Encoding"] == "gzip" and len(packed.data) < len(script.data) / 2
    assert gzip.decompress(packed.data) == script.data

    # Counts are whole numbers, each document is named with its collection, and every chart says in
    # words what it shows; the numbers a reviewer wants first are on top.
    assert figures["votes"]["layout"]["yaxis2"]["dtick"] == 1 and figures["votes"]["layout"]["yaxis2"]["tickformat"] == ",d"
    assert figures["documents"]["data"][0]["y"][-1] == "Handbook: handbook/a.md"
    assert figures["causes"]["layout"]["showlegend"] is True  # one cause still gets its legend
    assert re.search(r'role="img" aria-label="Up-vote rate and answers per day over 30 days\. teambot-dev: \d+ answers, '
                     r'0% up-voted', html)
    summary = re.search(r'<section class="summary".*?</section>', html, re.S).group(0)
    assert "down-voted answers not reviewed" in summary and "<strong>1</strong> reviewed in the last 7 days" in summary


def test_the_quality_page_lists_cited_pages_that_have_not_changed_for_months(page):
    from datetime import datetime, timedelta, timezone

    client, store, reviews, ids = page
    _login(client)
    now = datetime.now(timezone.utc)

    def cite(url: str, days_old: int, times: int) -> None:
        source = Source(number=1, title=f"Page {days_old}", path=url, snippet="…", chunk_id="c", score=0.7, url=url,
                        updated=(now - timedelta(days=days_old)).isoformat())
        for n in range(times):
            answer = Answer(question=f"q{n}", text="a [1]", sources=[source], retrieved=[source], model="m",
                            collection="Docs")
            store.record_answer(answer, platform="slack", user_id="u", channel="C1", thread=answer.id)

    cite("https://docs.example.com/backups.html", 400, 3)  # often cited, a year old
    cite("https://docs.example.com/vpn.html", 5, 5)  # often cited, fresh
    cite("javascript:alert(1)", 300, 1)  # never a link
    stale = reviews.quality(days=7).stale
    assert [(row[2], row[3]) for row in stale] == [("https://docs.example.com/backups.html", 3), ("javascript:alert(1)", 1)]
    html = client.get("/quality").get_data(as_text=True)
    table = html[html.index('id="stale"'):]
    assert '<a href="https://docs.example.com/backups.html"' in table and "vpn.html" not in table
    assert 'href="javascript' not in table


def test_reviewers_are_added_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from teambot.cli import app

    env = {"TEAMBOT_DATA_DIR": str(tmp_path)}
    made = CliRunner().invoke(app, ["review", "add-user", "maria", "--password-stdin"], input=PASSWORD + "\n", env=env)
    assert made.exit_code == 0 and "reviewer maria created" in made.output
    short = CliRunner().invoke(app, ["review", "add-user", "ana", "--password-stdin"], input="short\n", env=env)
    assert short.exit_code == 1 and "at least 12 characters" in short.output
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}")
    assert ReviewStore(store).login("maria", PASSWORD).ok
    store.engine.dispose()


@pytest.mark.parametrize("embedder", ["all-MiniLM-L6-v2-int8", "all-MiniLM-L6-v2", "e5-small-v2-int8"])
def test_the_reviewed_answer_threshold_serves_paraphrases_and_not_other_questions(embedder):
    """Each embedder's reviewed-answer threshold on bench/reviewed_match.py's pairs: never another
    question's answer, and (nearly) every paraphrase."""
    from bench.reviewed_match import NEAR_MISSES, PARAPHRASES, similarities
    from pipeline.embedders import same_question
    from training.export import project_embedder

    settings = load_settings().model_copy(update={"embedder": embedder})
    embed = project_embedder(settings)
    threshold = same_question(settings)
    assert (similarities(embed, PARAPHRASES) >= threshold).mean() >= 0.95
    assert (similarities(embed, NEAR_MISSES) < threshold).all()


def test_the_inbox_counts_what_a_bare_query_counts(store_url):
    from sqlalchemy import text

    from bench.review_inbox import fill
    from feedback.reviews import InboxFilter

    store = FeedbackStore(store_url, user_salt="test")
    fill(store, 600)
    rows, total = ReviewStore(store).inbox(InboxFilter(vote="down", reviewed="any"))
    with store.engine.connect() as connection:
        bare = connection.execute(text(
            "SELECT count(*) FROM (SELECT answer_id FROM ratings GROUP BY answer_id HAVING "
            "sum(CASE WHEN value < 0 THEN 1 ELSE 0 END) > sum(CASE WHEN value > 0 THEN 1 ELSE 0 END)) AS d")).scalar()
    assert total == bare > 25 and len(rows) == 25 and all(r.down > r.up for r in rows)
    assert [r.down - r.up for r in rows] == sorted((r.down - r.up for r in rows), reverse=True)
    store.engine.dispose()


def test_the_queue_shows_what_needs_a_person_and_a_refused_save_keeps_what_was_typed(page):
    client, store, reviews, ids = page
    _login(client)
    helped = _answer(store, "Where is the VPN guide?", "I don't know.", outcome=Outcome.ABSTAINED)
    handoff, _ = store.request_handoff(helped, platform="slack", user_id="asker")
    corrected = _answer(store, "How long is parental leave?", "Two weeks.", votes=(-1,))
    store.rate(corrected, platform="slack", user_id="U0", value=-1, correction="Sixteen weeks, paid [1].")

    # The default inbox: more 👎 than 👍, or a person asked for help, and not reviewed yet.
    inbox = client.get("/").get_data(as_text=True)
    assert '<meta name="viewport"' in inbox
    for question in ("How many vacation days", "Where is the VPN guide?", "How long is parental leave?"):
        assert question in inbox
    assert "When is the Lisbon office open?" not in inbox and "Who approves my vacation?" not in inbox
    assert re.search(r"How long is parental leave\?.*?<td>0</td><td>1</td>", inbox, re.S)  # 0 reasons, 1 correction

    # The user's correction starts the review in one click.
    answer_page = client.get(f"/answers/{corrected}").get_data(as_text=True)
    start = re.search(r'href="([^"]+)#review" class="start-from"', answer_page).group(1).replace("&amp;", "&")
    started = client.get(start).get_data(as_text=True)
    assert re.search(r'<textarea[^>]*>Sixteen weeks, paid \[1\].</textarea>', started)

    # Refused (approved and excluded at once): the page comes back with everything as typed.
    typed = "Sixteen weeks, paid, from the day of birth [1]."
    refused = client.post(f"/answers/{corrected}", data={
        "csrf_token": _csrf(started), "correction": typed, "cause": "outdated_document", "exclude": "on",
        "approved": "on"})
    html = refused.get_data(as_text=True)
    assert refused.status_code == 422 and "Not saved: an answer excluded from training is not served" in html
    assert f">{typed}</textarea>" in html and 'value="outdated_document" selected' in html
    assert re.search(r'id="exclude" checked', html) and re.search(r'id="approved" checked', html)
    assert reviews.review(corrected) is None

    # Reviewed answers leave the default inbox; the experts' draft is what an expert answered.
    reviews.save_review(ids["bad"], "maria", correction="28 days [1].", cause=None, exclude=False, approved=False)
    assert "How many vacation days" not in client.get("/").get_data(as_text=True)
    store.add_expert_reply(handoff.id, platform="slack", message_id="1.1", user_id="U0MARIA",
                           text="The VPN guide is on the IT wiki.")
    assert "expert's draft" not in client.get("/?vote=expert&reviewed=any").get_data(as_text=True)  # still waiting
    store.resolve_handoff(handoff.id, platform="slack", user_id="U0MARIA")
    assert "expert's draft" in client.get("/?vote=expert").get_data(as_text=True)
    drafted = client.get(f"/answers/{helped}").get_data(as_text=True)
    assert 'id="expert-answer">The VPN guide is on the IT wiki.</pre>' in drafted
    assert ">The VPN guide is on the IT wiki.</textarea>" in drafted

    missing = client.get("/answers/no-such-answer")
    assert missing.status_code == 404 and "There is no such page here." in missing.get_data(as_text=True)
    assert "Back to the inbox" in missing.get_data(as_text=True)


def test_bulk_actions_save_and_next_and_the_reviews_export(page):
    import csv
    import io
    import json

    client, store, reviews, ids = page
    _login(client)
    formula = _answer(store, "=HYPERLINK(\"http://evil.example\")", "Sure.", votes=(-1,))
    inbox = client.get("/").get_data(as_text=True)
    queue = [m.group(1) for m in re.finditer(r'href="/answers/([^"?]+)\?queue=[^"]*" class="question"', inbox)]
    assert queue[:2] == [ids["bad"], ids["xss"]] or queue[:2] == [ids["bad"], formula]

    # Save & next walks the queue in its order, keeping its filter.
    first = client.get(f"/answers/{queue[0]}?queue=vote%3Dattention").get_data(as_text=True)
    saved = client.post(f"/answers/{queue[0]}", data={"csrf_token": _csrf(first), "correction": "28 days [1].",
                                                    "queue": "vote=attention", "next": "1"})
    assert saved.status_code == 302 and saved.headers["Location"].startswith(f"/answers/{queue[1]}?queue=vote")

    # Bulk: a cause on two answers, "reviewed" on one; other parts of their reviews are kept.
    token = _csrf(inbox)
    done = client.post("/bulk", data={"csrf_token": token, "action": "cause", "cause": "retrieval_missed",
                                      "ids": [ids["bad"], ids["xss"]]}, follow_redirects=True)
    assert "2 of 2 answers changed." in done.get_data(as_text=True)
    assert reviews.review(ids["bad"]).correction == "28 days [1]." and reviews.review(ids["bad"]).cause == "retrieval_missed"
    client.post("/bulk", data={"csrf_token": token, "action": "reviewed", "ids": [formula]})
    assert reviews.review(formula) is not None and formula not in client.get("/").get_data(as_text=True)
    assert "maria marked it reviewed" in client.get(f"/answers/{formula}").get_data(as_text=True)
    refused = client.post("/bulk", data={"csrf_token": token, "action": "cause", "ids": [ids["good"]]},
                          follow_redirects=True)
    assert "Nothing was changed: choose the cause to set" in refused.get_data(as_text=True)

    exported = client.get("/reviews.csv")
    assert exported.headers["Content-Disposition"] == "attachment; filename=teambot-reviews.csv"
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    assert {r["answer_id"] for r in rows} == {ids["bad"], ids["xss"], formula}
    assert next(r for r in rows if r["answer_id"] == formula)["question"].startswith("'=HYPERLINK")  # text, not a formula
    lines = [json.loads(line) for line in client.get("/reviews.jsonl").get_data(as_text=True).splitlines()]
    assert next(r for r in lines if r["answer_id"] == ids["bad"])["cause"] == "retrieval_missed"
    assert client.get("/reviews.xml").status_code == 404


def test_admins_manage_reviewers_and_two_reviewers_never_overwrite_each_other(page):
    from typer.testing import CliRunner

    from teambot.cli import app

    client, store, reviews, ids = page
    assert reviews.role_of("maria") == "admin"  # the first reviewer made
    assert reviews.add_reviewer("rita", PASSWORD + "!") and reviews.role_of("rita") == "reviewer"
    rita = client.application.test_client()
    _login(rita, "rita", PASSWORD + "!")
    assert rita.get("/reviewers").status_code == 403 and "Reviewers</a>" not in rita.get("/").get_data(as_text=True)

    # Both open the same answer; rita takes it, maria is told; rita saves first, maria's save is refused
    # with her text kept, and only the second try (having seen rita's) goes through.
    _login(client)
    rita_page = rita.get(f"/answers/{ids['bad']}").get_data(as_text=True)
    maria_page = client.get(f"/answers/{ids['bad']}").get_data(as_text=True)
    rita.post(f"/answers/{ids['bad']}/take", data={"csrf_token": _csrf(rita_page)})
    assert "rita took this answer at" in client.get(f"/answers/{ids['bad']}").get_data(as_text=True)
    seen = re.search(r'name="seen" value="([^"]*)"', maria_page).group(1)
    rita.post(f"/answers/{ids['bad']}", data={"csrf_token": _csrf(rita_page), "correction": "28 days [1].",
                                              "seen": re.search(r'name="seen" value="([^"]*)"', rita_page).group(1)})
    clash = client.post(f"/answers/{ids['bad']}", data={"csrf_token": _csrf(maria_page), "correction": "30 days.",
                                                        "seen": seen})
    html = clash.get_data(as_text=True)
    assert clash.status_code == 409 and "rita saved this review at" in html and ">30 days.</textarea>" in html
    assert reviews.review(ids["bad"]).correction == "28 days [1]."
    again = client.post(f"/answers/{ids['bad']}", data={"csrf_token": _csrf(html), "correction": "30 days.",
                                                        "seen": re.search(r'name="seen" value="([^"]*)"', html).group(1)})
    assert again.status_code == 302 and reviews.review(ids["bad"]).correction == "30 days."

    # The admin disables rita from the page: her session ends and she cannot log in; the last admin stays.
    admin_page = client.get("/reviewers").get_data(as_text=True)
    assert "rita" in admin_page and "reviewer" in admin_page
    client.post("/reviewers", data={"csrf_token": _csrf(admin_page), "name": "rita", "action": "disable"})
    assert rita.get("/").status_code == 302
    assert _login(rita, "rita", PASSWORD + "!").status_code == 401
    refused = client.post("/reviewers", data={"csrf_token": _csrf(admin_page), "name": "maria", "action": "disable"},
                          follow_redirects=True).get_data(as_text=True)
    assert "you cannot disable yourself" in refused and reviews.role_of("maria") == "admin"
    client.post("/reviewers", data={"csrf_token": _csrf(admin_page), "name": "sam", "password": "a long password 1",
                                    "role": "admin", "action": "add"})
    assert reviews.role_of("sam") == "admin"

    # And from the command line.
    env = {"TEAMBOT_FEEDBACK_DB_URL": store.engine.url.render_as_string(hide_password=False)}
    enabled = CliRunner().invoke(app, ["review", "enable-user", "rita"], env=env)
    assert enabled.exit_code == 0 and "reviewer rita enabled" in enabled.output
    assert _login(rita, "rita", PASSWORD + "!").status_code == 302
    CliRunner().invoke(app, ["review", "disable-user", "sam"], env=env)
    last = CliRunner().invoke(app, ["review", "disable-user", "maria"], env=env)
    assert last.exit_code == 1 and "the last admin cannot be disabled" in last.output


def test_the_inbox_searches_question_and_answer_text_and_sorts_by_a_column(page):
    client, store, reviews, ids = page
    _login(client)
    found = client.get("/?vote=any&reviewed=any&q=vacation+days").get_data(as_text=True)
    assert "1 answer<" in found and "How many vacation days do I get?" in found
    assert "1 answer<" in client.get("/?vote=any&reviewed=any&q=07:30").get_data(as_text=True)  # the answer's text
    assert "0 answers" in client.get("/?vote=any&reviewed=any&q=100%25").get_data(as_text=True)  # % is a character
    newest = client.get("/?vote=any&reviewed=any&sort=newest").get_data(as_text=True)
    oldest = client.get("/?vote=any&reviewed=any&sort=oldest").get_data(as_text=True)
    assert newest.index("Who approves my vacation?") < newest.index("How many vacation days")
    assert oldest.index("How many vacation days") < oldest.index("Who approves my vacation?")
    most_up = client.get("/?vote=any&reviewed=any&sort=most_up").get_data(as_text=True)
    assert most_up.index("When is the Lisbon office open?") < most_up.index("How many vacation days")
    assert 'href="/?vote=any&amp;reviewed=any&amp;sort=most_down"' in most_up  # the column header sorts
