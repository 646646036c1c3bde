"""The review page's logins, sessions and inbox filters against hostile use, on SQLite and
PostgreSQL: parallel guesses, a replayed cookie, telling names apart, and query values built to break
the inbox."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from sqlalchemy import event, update

import feedback.reviews
import review.app
from feedback.reviews import MAX_FAILED_LOGINS, ReviewerRecord
from review.app import FILTER_KEYS
from tests.test_review import PASSWORD, _csrf, _login, page  # noqa: F401 (the fixture)


def test_parallel_wrong_passwords_lock_the_account(page):
    _, _, reviews, _ = page
    with ThreadPoolExecutor(MAX_FAILED_LOGINS) as pool:  # every one of them counted, none lost
        results = list(pool.map(lambda _: reviews.login("maria", "a wrong guess"), range(MAX_FAILED_LOGINS)))
    assert not any(r.ok for r in results)
    assert not reviews.login("maria", PASSWORD).ok and reviews.session_key("maria") is None  # locked
    with reviews.engine.begin() as connection:  # the lock runs out: five more tries
        connection.execute(update(ReviewerRecord).values(locked_until=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert reviews.login("maria", "a wrong guess").failures == 1 and reviews.login("maria", PASSWORD).ok


def test_a_session_cookie_saved_before_logout_is_refused_after_it(page):
    client, *_ = page
    _login(client)
    inbox = client.get("/")
    saved = client.get_cookie("teambot_review").value
    client.post("/logout", data={"csrf_token": _csrf(inbox.get_data(as_text=True))})
    replay = client.application.test_client()
    replay.set_cookie("teambot_review", saved)
    response = replay.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    _login(client)  # a new login opens a new session
    assert client.get("/").status_code == 200 and replay.get("/").status_code == 302


def test_locked_unknown_and_wrong_logins_answer_alike(page, monkeypatch):
    client, store, reviews, _ = page
    reviews.add_reviewer("ana", PASSWORD)
    for _ in range(MAX_FAILED_LOGINS):
        reviews.login("ana", "a wrong guess")
    monkeypatch.setattr(review.app, "FAILED_LOGIN_DELAY", 0)
    checks, statements = [], []
    check = feedback.reviews.check_password
    monkeypatch.setattr(feedback.reviews, "check_password", lambda *a: checks.append(1) or check(*a))
    event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(1))
    answers = {}
    for name, password in (("maria", "a wrong guess"), ("nobody", PASSWORD), ("ana", PASSWORD)):
        form = client.get("/login").get_data(as_text=True)
        checks.clear(), statements.clear()
        response = client.post("/login", data={"name": name, "password": password, "csrf_token": _csrf(form)})
        html = re.sub(r'name="csrf_token" value="[^"]+"', "", response.get_data(as_text=True))
        answers[name] = (response.status_code, html, len(checks), len(statements))
    assert answers["maria"][0] == 401 and "Wrong name or password" in answers["maria"][1]
    assert answers["maria"] == answers["nobody"] == answers["ana"]  # same text, status, password checks, queries


HOSTILE = ("99999999999999999999", "-99999999999999999999", "-1", "0", "1e3", "1" * 5000, "abc", "", " ",
           "9999-12-31", "0001-01-01", "2024-02-30", "2024-13-01", "+002024-01-01", "\x00", "a\x00b", "%", "_",
           "' OR 1=1 --", "\U0001f44e" * 300)


def test_hostile_inbox_filters_never_fail(page):
    client, *_ = page
    _login(client)
    for key in (*FILTER_KEYS, "page"):
        for value in HOSTILE:
            response = client.get("/", query_string={key: value, "vote": "any"} if key != "vote" else {key: value})
            assert response.status_code in (200, 400), (key, value, response.status_code)
    assert "page 1 of 1" in client.get("/?vote=any&page=99999999999999999999").get_data(as_text=True)  # the last
    assert "4 answers" in client.get("/?vote=any&until=9999-12-31").get_data(as_text=True)  # no upper bound
    assert "4 answers" in client.get("/?vote=any&since=0001-01-01&until=9999-12-30").get_data(as_text=True)


def test_reviewers_made_before_session_versions_log_in_after_the_upgrade(store_url):
    from alembic import command
    from sqlalchemy import create_engine, inspect, text

    from feedback.reviews import ReviewStore, hash_password
    from feedback.store import FeedbackStore, _alembic_config

    engine = create_engine(store_url)
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "0005")
        connection.execute(text("INSERT INTO reviewers (name, password_hash, created_at) VALUES ('maria', :h, "
                                "CURRENT_TIMESTAMP)"), {"h": hash_password(PASSWORD)})
    store = FeedbackStore(store_url)  # upgrades to 0006
    reviews = ReviewStore(store)
    key = reviews.session_key("maria")
    assert reviews.login("maria", PASSWORD).ok and key is not None
    reviews.end_sessions("maria")
    assert reviews.session_key("maria") not in (None, key)
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0005")
    assert "session_version" not in {c["name"] for c in inspect(engine).get_columns("reviewers")}
    store.engine.dispose(), engine.dispose()
