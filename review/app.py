"""The review page (`teambot review`): Flask with server-side Jinja templates.

Every page needs a session: reviewers log in with a name and password (feedback/reviews.py keeps
the scrypt hash, the failure count and the lockout), a failed login is answered only after
FAILED_LOGIN_DELAY, and the session cookie is signed, HttpOnly, SameSite=Lax, Secure unless the
page is served on loopback only, and expires after SESSION_HOURS; a logout ends it on the server
too (the reviewer's session version moves on). Every form carries a CSRF token (Flask-WTF's
CSRFProtect); a post without it is refused. Templates escape everything they show (Jinja
autoescaping): questions, answers, passages and reasons are user text.
"""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlparse

from flask import Flask, Response, abort, flash, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.datastructures import MultiDict

from core import active_model
from core.secret_files import read_or_create
from core.settings import Settings
from feedback.reviews import (
    CAUSES, DOCUMENT_ACTIONS, LOCKOUT, ROLES, SORTS, STALE_DAYS, InboxFilter, ReviewConflict, ReviewError, ReviewStore, stamp,
)
from feedback.store import FeedbackStore
from review import charts

FAILED_LOGIN_DELAY = 1.0  # seconds before a failed login is answered
SESSION_HOURS = 8
SECRET_FILE = "review_secret"
PUBLIC = {"login", "static", "healthz"}
FILTER_KEYS = ("vote", "collection", "model", "since", "until", "has_reason", "reviewed", "q", "sort")
MAX_PAGE = 10**9  # the offset of a page further on would not fit a database integer
# One answer for a wrong password, an unknown name and a locked account: it tells no names.
LOGIN_REFUSED = f"Wrong name or password (or too many failed logins: then try again in {LOCKOUT.seconds // 60} minutes)."


def secret_key(settings: Settings) -> str:
    """TEAMBOT_REVIEW_SECRET_KEY, else one made once and kept in data_dir (readable by this user only)."""
    if settings.review_secret_key is not None and settings.review_secret_key.get_secret_value():
        return settings.review_secret_key.get_secret_value()
    return read_or_create(Path(settings.data_dir) / SECRET_FILE)[0]


def loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost")


def create_app(settings: Settings, store: FeedbackStore | None = None) -> Flask:
    app = Flask(__name__)
    store = store or FeedbackStore.from_settings(settings)
    reviews = ReviewStore(store)
    app.config.update(
        SECRET_KEY=secret_key(settings),
        SESSION_COOKIE_NAME="teambot_review",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # Served beyond loopback the page must sit behind TLS: the cookie is sent over HTTPS only.
        SESSION_COOKIE_SECURE=not loopback(settings.review_host),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        WTF_CSRF_TIME_LIMIT=SESSION_HOURS * 3600,
        MAX_CONTENT_LENGTH=256 * 1024,
    )
    CSRFProtect(app)

    @app.before_request
    def require_login():
        if request.endpoint in PUBLIC:
            return None
        name = session.get("reviewer")
        key = reviews.session_key(name) if name else None
        if not name or key is None or session.get("key") != key or time.time() - session.get("since", 0) > SESSION_HOURS * 3600:
            if name:  # deleted, locked, a new password, or too old: the session ends
                session.clear()
            # (Not cleared otherwise: the login form's CSRF token lives in the session, and the
            # browser's own requests, such as /favicon.ico, come here while the form is shown.)
            return redirect(url_for("login", next=request.full_path.rstrip("?") if request.method == "GET" else None))
        g.reviewer, g.role = name, reviews.role_of(name)
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        # Scripts only from this page's own origin (the charting library is served from here): a
        # script that slipped into a question could not run even if it escaped the templates.
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
        )
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(CSRFError)
    def csrf_refused(error: CSRFError):
        return render_template("error.html", message=f"The form was refused: {error.description} Reload the page and try again."), 400

    @app.errorhandler(403)
    def forbidden(_error):
        return render_template("error.html", message="That is not yours to do.", back=True), 403

    @app.errorhandler(404)
    def not_found(_error):
        return render_template("error.html", message="There is no such page here.", back=True), 404

    @app.errorhandler(500)
    def failed(_error):
        return render_template("error.html", message="Something went wrong on our side; the error was logged.",
                               back=True), 500

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.route("/login", methods=["GET", "POST"])
    def login():
        error = None
        if request.method == "POST":
            name = request.form.get("name", "").strip()
            result = reviews.login(name, request.form.get("password", ""))
            if result.ok:
                session.clear()  # a fresh session: nothing carried over from before the login
                session.permanent = True
                session.update(reviewer=name, key=reviews.session_key(name), since=int(time.time()))
                target = request.args.get("next") or ""
                # Only a path on this site: not "//host", nor "/\\host" (browsers read "\\" as "/").
                safe = (target.startswith("/") and not target.startswith("//") and "\\" not in target
                        and not any(ord(c) < 32 for c in target) and not urlparse(target).netloc)
                return redirect(target if safe else url_for("inbox"))
            time.sleep(FAILED_LOGIN_DELAY)
            error = LOGIN_REFUSED
        return render_template("login.html", error=error), (401 if error else 200)

    @app.post("/logout")
    def logout():
        reviews.end_sessions(g.reviewer)  # a copy of the cookie kept from before is no use either
        session.clear()
        return redirect(url_for("login"))

    @app.get("/")
    def inbox():
        f = _inbox_filter(request.args)
        rows, total = reviews.inbox(f)
        pages = max(1, -(-total // f.per_page))
        if f.page > pages:  # past the end: the last page
            f.page = pages
            rows, total = reviews.inbox(f)
        collections, models = reviews.facets()
        args = {k: v for k, v in request.args.items() if k in FILTER_KEYS}
        return render_template(
            "inbox.html", rows=rows, total=total, f=f, pages=pages, collections=collections, models=models,
            causes=CAUSES, args=args, queue=urlencode(args), sorts=SORTS,
        )

    @app.post("/bulk")
    def bulk():
        ids, action, cause = request.form.getlist("ids"), request.form.get("action", ""), request.form.get("cause") or None
        try:
            changed = reviews.bulk(ids, g.reviewer, action, cause)
        except ReviewError as exc:
            flash(f"Nothing was changed: {exc}", "error")
        else:
            flash(f"{changed} of {len(ids)} answers changed.", "ok")
        return redirect(url_for("inbox") + "?" + _queue(request.form.get("queue", "")))

    @app.get("/reviews.<fmt>")
    def export_reviews(fmt: str):
        rows = reviews.export_rows()
        if fmt == "jsonl":
            body = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
            return Response(body, mimetype="application/x-ndjson",
                            headers={"Content-Disposition": "attachment; filename=teambot-reviews.jsonl"})
        if fmt != "csv":
            abort(404)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["answer_id"])
        writer.writeheader()
        for row in rows:  # a cell a spreadsheet would run as a formula is written as text
            writer.writerow({k: _cell(v) for k, v in row.items()})
        return Response(out.getvalue(), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=teambot-reviews.csv"})

    @app.route("/answers/<answer_id>", methods=["GET", "POST"])
    def answer(answer_id: str):
        record = store.get_answer(answer_id)
        if record is None:
            abort(404)
        if request.method == "POST":
            form = {"correction": request.form.get("correction"), "cause": request.form.get("cause") or None,
                    "exclude": request.form.get("exclude") == "on", "approved": request.form.get("approved") == "on"}
            queue = _queue(request.form.get("queue", ""))
            try:
                changed = reviews.save_review(answer_id, g.reviewer, **form, seen=request.form.get("seen", ""))
            except ReviewConflict as exc:  # another reviewer saved first: theirs stays, this one is shown as typed
                return answer_page(record, form=form, error=str(exc), queue=queue), 409
            except ReviewError as exc:
                # Shown again as typed: a refused save loses nothing.
                return answer_page(record, form=form, error=str(exc), queue=queue), 422
            flash(f"Saved ({', '.join(changed)})." if changed else "Nothing changed.", "ok")
            if request.form.get("next"):
                following = reviews.next_in_queue(_inbox_filter(MultiDict(parse_qsl(queue))), answer_id)
                if following is None:
                    flash("That was the last answer in this queue.", "ok")
                    return redirect(url_for("inbox") + "?" + queue)
                return redirect(url_for("answer", answer_id=following, queue=queue or None))
            return redirect(url_for("answer", answer_id=answer_id, queue=queue or None))
        return answer_page(record, start=request.args.get("from", type=int), queue=_queue(request.args.get("queue", "")))

    def answer_page(record, *, form: dict | None = None, error: str | None = None, start: int | None = None,
                    queue: str = "") -> str:
        """The answer, its passages, votes and review form: `form` as typed (after a refused save),
        else the saved review, else the chosen user correction (`start`) or the experts' draft."""
        answer_id = record.id
        shown = {s.get("path"): s for s in record.sources or [] if isinstance(s, dict)}
        passages = [
            {"number": p.get("number", i), "title": p.get("title", ""), "path": p.get("path", ""),
             "url": p.get("url") or shown.get(p.get("path"), {}).get("url", ""), "snippet": p.get("text", ""),
             "score": p.get("score"), "cited": p.get("path") in shown}
            for i, p in enumerate((p for p in record.retrieved or [] if isinstance(p, dict)), 1)
        ]
        overrides = {path: action for name in record.collection.split("+")
                     for path, action in reviews.document_overrides(name).items()}
        ratings, review, expert = store.ratings(answer_id), reviews.review(answer_id), reviews.expert_draft(answer_id)
        if form is None:
            chosen = next((r.correction for r in ratings if r.id == start and r.correction), None)
            form = {"correction": chosen or (review.correction if review and review.correction else None)
                    or (expert.text if expert else ""),
                    "cause": review.cause if review else None, "exclude": bool(review and review.exclude),
                    "approved": bool(review and review.approved)}
        return render_template(
            "answer.html", a=record, passages=passages, ratings=ratings,
            history=_thread_before(store, record), review=review, form=form, error=error, expert=expert,
            events=[{"at": e.at, "reviewer": e.reviewer, "words": _in_words(e)} for e in reviews.events(f"answer:{answer_id}")],
            causes=CAUSES, overrides=overrides, actions=DOCUMENT_ACTIONS, queue=queue, seen=stamp(review),
            claim=reviews.claim(answer_id),
        )

    @app.post("/answers/<answer_id>/take")
    def take(answer_id: str):
        if store.get_answer(answer_id) is None:
            abort(404)
        before = reviews.take(answer_id, g.reviewer)
        flash(f"You took it over from {before}: they will see that you have it." if before else
              "It is yours: other reviewers opening it are told.", "ok")
        return redirect(url_for("answer", answer_id=answer_id, queue=_queue(request.form.get("queue", "")) or None))

    @app.route("/reviewers", methods=["GET", "POST"])
    def reviewers_page():
        if g.role != "admin":
            return render_template("error.html", message="Only an admin manages reviewers.", back=True), 403
        if request.method == "POST":
            name, action = request.form.get("name", "").strip(), request.form.get("action", "")
            try:
                if action in ("add", "reset"):
                    created = reviews.add_reviewer(name, request.form.get("password", ""),
                                                   request.form.get("role") or None)
                    flash(f"{name}: {'added' if created else 'new password set, unlocked'}.", "ok")
                elif action in ("disable", "enable"):
                    reviews.set_disabled(name, action == "disable", by=g.reviewer)
                    flash(f"{name}: {action}d.", "ok")
                else:
                    raise ReviewError("unknown action")
            except ReviewError as exc:
                flash(f"{name or 'Reviewer'}: {exc}.", "error")
            return redirect(url_for("reviewers_page"))
        return render_template("reviewers.html", people=reviews.reviewers(), roles=ROLES)

    @app.post("/documents")
    def document():
        collection, path = request.form.get("collection", ""), request.form.get("path", "")
        action = request.form.get("action") or None
        try:
            if not collection or not path:
                raise ReviewError("which document?")
            for name in collection.split("+"):  # an answer from several collections: in each of them
                reviews.set_document_override(name, path, action, g.reviewer)
        except ReviewError as exc:
            flash(str(exc), "error")
        else:
            flash(f"{path}: {action or 'ranked by votes only'}.", "ok")
        back = request.form.get("back", "")
        return redirect(back if back.startswith("/answers/") else url_for("inbox"))

    @app.get("/quality")
    def quality():
        days = min(max(request.args.get("days", 30, type=int), 7), 365)
        data = reviews.quality(days)
        events = _model_events(settings)
        figures = charts.quality_figures(data, events)
        _, open_down = reviews.inbox(InboxFilter(vote="down", reviewed="no", per_page=1))
        summary = {"models": charts.up_rates(data), "open_down": open_down, "reviewed_week": reviews.reviewed_since(7)}
        return render_template("quality.html", figures=figures, documents=data.documents, stale=data.stale,
                               stale_days=STALE_DAYS, days=days, causes=CAUSES, summary=summary,
                               alt=charts.text_alternatives(data, events))

    @cache
    def embed_questions():
        from review.gaps import question_embedder

        return question_embedder(settings)  # loaded on the first visit of /gaps, then kept

    @app.get("/gaps")
    def gaps():
        from pipeline.embedders import embedder_spec
        from review.gaps import find_gaps

        found = find_gaps(store, embed_questions(), embedder_spec(settings).same_topic, include_closed=True)
        return render_template("gaps.html", gaps=found)

    @app.get("/charts.js")
    def charting_library():
        # 4.8 MB as it is, 1.5 MB gzipped: sent compressed to every browser that takes it.
        headers = {"Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return Response(_plotly_js_gzip(), mimetype="application/javascript",
                            headers={**headers, "Content-Encoding": "gzip"})
        return Response(_plotly_js(), mimetype="application/javascript", headers=headers)

    @app.template_filter("when")
    def when(moment) -> str:
        return f"{moment:%Y-%m-%d %H:%M}" if moment else ""

    app.jinja_env.globals["cause_label"] = lambda key: CAUSES.get(key or "", key or "")
    return app


@cache
def _plotly_js_gzip() -> bytes:
    import gzip

    return gzip.compress(_plotly_js().encode(), compresslevel=9, mtime=0)


@cache
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _queue(text: str) -> str:
    """An inbox filter carried through the answer pages (the queue "save & next" walks), with
    only the filter's own keys."""
    return urlencode([(k, v) for k, v in parse_qsl(text[:2000]) if k in FILTER_KEYS])


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _inbox_filter(args) -> InboxFilter:
    def day(name: str) -> date | None:
        try:
            return date.fromisoformat(args.get(name, ""))
        except ValueError:
            return None

    def text(name: str) -> str:  # PostgreSQL refuses NUL in text
        return args.get(name, "")[:128].replace("\0", "")

    vote = args.get("vote", "attention")
    reviewed = args.get("reviewed", "no")
    until = day("until")
    return InboxFilter(
        vote=vote if vote in ("attention", "down", "up", "none", "any", "expert") else "attention",
        collection=text("collection"), model=text("model"),
        since=day("since"), until=until if until != date.max else None,  # the last day there is: no upper bound
        has_reason=args.get("has_reason") == "on", reviewed=reviewed if reviewed in ("any", "yes", "no") else "no",
        search=text("q"), sort=args.get("sort", "worst") if args.get("sort") in SORTS else "worst",
        page=min(max(1, args.get("page", 1, type=int) or 1), MAX_PAGE), per_page=25,
    )


FIELD_WORDS = {"correction": "the correction", "cause": "the cause", "exclude": "exclusion from training",
               "approved": "approval to be served"}


def _in_words(event) -> str:
    """A review event as a sentence: "approved the correction to be served", not "approved: false → true"."""
    field, old, new = event.field, event.old, event.new
    if field == "approved":
        return "approved the correction to be served" if new == "true" else "withdrew the approval to serve it"
    if field == "reviewed":
        return "marked it reviewed"
    if field == "exclude":
        return "excluded it from training" if new == "true" else "let it back into training"
    if field == "cause":
        new, old = CAUSES.get(new or "", new), CAUSES.get(old or "", old)
    if not new:
        return f"removed {FIELD_WORDS.get(field, field)} ({old})"
    return f"set {FIELD_WORDS.get(field, field)} to “{new}”" + (f" (was “{old}”)" if old else "")


def _thread_before(store: FeedbackStore, record) -> list:
    """The earlier turns of the answer's thread, as the model was given them."""
    if not record.thread:
        return []
    turns = store.thread_history(record.platform, record.channel, record.thread, limit=20)
    return [t for t in turns if t.question != record.question or t.answer != record.answer_text]


def _model_events(settings: Settings) -> list[dict]:
    """Publishes (runs/*/published.json) and activations/rollbacks, for the timeline."""
    found = []
    for path in sorted((Path(settings.data_dir) / "runs").glob("*/published.json")):
        try:
            published = json.loads(path.read_text())
            found.append({"at": published["published_at"], "event": "published", "model": published["model"]})
        except (OSError, ValueError, KeyError):
            continue
    adapters = [{**e, "model": f"{e.get('model', '')} (query adapter)"}
                for e in active_model.events(settings, "query_adapter")]
    return sorted(found + active_model.events(settings) + adapters, key=lambda e: str(e.get("at", "")))
