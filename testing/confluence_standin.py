"""A stand-in of Confluence Cloud's REST API, as strict as the reference (developer.atlassian.com,
Confluence Cloud REST API v2 and v1) for the calls teambot makes:

- Basic auth with an account's email and API token on every call; otherwise 401 with Atlassian's
  JSON error body.
- `GET /wiki/api/v2/spaces?keys=`; `GET /wiki/api/v2/spaces/{id}/pages` (limit 1–250, else 400;
  cursor pagination: `_links.next` and a `Link: <…>; rel="next"` header; a cursor it did not issue
  is a 400); `GET /wiki/api/v2/pages/{id}?body-format=storage` (404 for a page it does not have,
  400 for another body format); `GET /wiki/api/v2/pages/{id}/attachments`; the attachment's
  `downloadLink`; `GET /wiki/rest/api/content/{id}/restriction/byOperation/read` (v1; its user and
  group restrictions only with `expand=restrictions.user,restrictions.group`).
- A page's version number goes up with every edit (a rename is an edit); `createdAt` is the edit's.
- Optional rate limit: after `budget` calls, 429 with Retry-After until `reset()`.
Every call is logged (method, path, status) for the tests to count.
"""

from __future__ import annotations

import base64
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import parse_qs, quote, urlsplit

from testing.json_api import JsonApiHandler, serve

MAX_LIMIT = 250


@dataclass
class Page:
    id: str
    title: str
    body: str  # storage-format XHTML
    parent: str | None = None
    version: int = 1
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
    readers: list[str] = field(default_factory=list)  # a read restriction to these account ids
    attachments: dict[str, tuple[str, bytes, int]] = field(default_factory=dict)  # id → (file name, bytes, version)


class ConfluenceStandin:
    def __init__(self, *, email: str = "bot@example.com", token: str = "", deployment: str = "cloud") -> None:
        self.email, self.token = email, token or secrets.token_urlsafe(16)
        self.deployment = deployment  # "cloud" (API v2, Basic email:token) or "datacenter" (REST API, Bearer PAT)
        self.context = "/wiki" if deployment == "cloud" else "/confluence"
        self.space_key, self.space_id = "ENG", "65537"
        self.pages: dict[str, Page] = {}
        self.page_size = MAX_LIMIT  # at most this many results per page, whatever the limit asked
        self.budget: int | None = None  # calls left before 429s; None: no rate limit
        self.calls: list[tuple[str, int]] = []
        self._cursors: dict[str, int] = {}
        self._lock = threading.Lock()
        self._next_id = 98305
        standin = self

        class Handler(JsonApiHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.reply(*standin._answer(self.path, self.headers.get("Authorization", "")))

        self.server = serve(self, Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}{self.context}"

    # ------------------------------------------------------------------ the space, as tests change it

    def add_page(self, title: str, body: str, *, parent: str | None = None, readers: list[str] | None = None) -> Page:
        self._next_id += 1
        page = Page(str(self._next_id), title, body, parent, readers=list(readers or []))
        self.pages[page.id] = page
        return page

    def edit(self, page: Page, *, title: str | None = None, body: str | None = None) -> None:
        page.title, page.body = title or page.title, body if body is not None else page.body
        page.version += 1
        page.created_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")

    def attach(self, page: Page, name: str, data: bytes) -> None:
        self._next_id += 1
        page.attachments[f"att{self._next_id}"] = (name, data, 1)

    def calls_to(self, prefix: str) -> int:
        with self._lock:
            return sum(1 for path, _ in self.calls if path.startswith(prefix))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ the API

    def _answer(self, raw: str, authorization: str):
        if self.budget is not None:
            if self.budget <= 0:
                return 429, {"code": 429, "message": "Rate limit exceeded"}, {"Retry-After": "1"}
            self.budget -= 1
        if self.deployment == "cloud":
            expected = "Basic " + base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
        else:
            expected = f"Bearer {self.token}"
        if authorization != expected:
            return 401, {"code": 401, "message": "Unauthorized; scope does not match"}, {}
        url = urlsplit(raw)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if not url.path.startswith(self.context + "/"):
            return 404, {"message": f"No route for {url.path}"}, {}
        parts = url.path.removeprefix(self.context).strip("/").split("/")
        if self.deployment == "datacenter":
            return self._datacenter(parts, query)
        if parts[:3] == ["api", "v2", "spaces"] and len(parts) == 3:
            keys = set(query.get("keys", "").split(",")) if "keys" in query else {self.space_key}
            found = [self._space()] if self.space_key in keys else []
            return 200, {"results": found, "_links": {"base": self.base_url}}, {}
        if parts[:3] == ["api", "v2", "spaces"] and parts[4:] == ["pages"]:
            if parts[3] != self.space_id:
                return 404, {"errors": [{"status": 404, "code": "NOT_FOUND", "title": "Space not found"}]}, {}
            return self._list(url.path, query, sorted(self.pages.values(), key=lambda p: int(p.id)), self._page_json)
        if parts[:3] == ["api", "v2", "pages"] and len(parts) == 4:
            page = self.pages.get(parts[3])
            if page is None:
                return 404, {"errors": [{"status": 404, "code": "NOT_FOUND", "title": "Not Found"}]}, {}
            body_format = query.get("body-format")
            if body_format not in (None, "storage", "atlas_doc_format"):
                return 400, {"errors": [{"status": 400, "code": "INVALID_REQUEST_PARAMETER",
                                         "title": f"Invalid body-format {body_format}"}]}, {}
            item = self._page_json(page)
            if body_format == "storage":
                item["body"] = {"storage": {"value": page.body, "representation": "storage"}}
            return 200, item, {}
        if parts[:3] == ["api", "v2", "pages"] and parts[4:] == ["attachments"] and parts[3] in self.pages:
            page = self.pages[parts[3]]
            items = [(aid, page, *rest) for aid, rest in sorted(page.attachments.items())]
            if query.get("mediaType") not in (None, "application/pdf"):
                items = []
            return self._list(url.path, query, items, self._attachment_json)
        return self._answer_common(parts, query)

    def _answer_common(self, parts: list[str], query: dict | None = None):
        """What both deployments serve alike: attachment downloads and v1 read restrictions."""
        if parts[:2] == ["download", "attachments"] and len(parts) == 4 and parts[2] in self.pages:
            for name, data, _ in self.pages[parts[2]].attachments.values():
                if quote(name) == parts[3]:
                    return 200, data, {}
            return 404, {"message": "Not Found"}, {}
        if parts[:4] == ["rest", "api", "content", parts[3] if len(parts) > 3 else ""] and \
                parts[4:] == ["restriction", "byOperation", "read"] and parts[3] in self.pages:
            readers = self.pages[parts[3]].readers
            expand = set((query or {}).get("expand", "").split(","))
            restrictions = {"_expandable": {k: "" for k in ("user", "group") if f"restrictions.{k}" not in expand}}
            if "restrictions.user" in expand:  # left out unless expanded, as the reference says
                restrictions["user"] = {"results": [{"type": "known", "accountId": r} for r in readers], "start": 0,
                                        "limit": 100, "size": len(readers)}
            if "restrictions.group" in expand:
                restrictions["group"] = {"results": [], "start": 0, "limit": 100, "size": 0}
            return 200, {"operation": "read", "restrictions": restrictions}, {}
        return 404, {"message": "No route for /" + "/".join(parts)}, {}

    # ------------------------------------------------------------------ Data Center's REST API

    def _datacenter(self, parts: list[str], query: dict):
        if parts[:3] == ["rest", "api", "space"] and len(parts) == 4:
            if parts[3] != self.space_key:
                return 404, {"statusCode": 404, "message": f"No space with key : {parts[3]}"}, {}
            return 200, {"id": int(self.space_id), "key": self.space_key, "name": "Engineering", "type": "global"}, {}
        if parts[:3] == ["rest", "api", "content"] and len(parts) == 3:
            if query.get("spaceKey") != self.space_key or query.get("type") != "page":
                return 200, {"results": [], "start": 0, "limit": 25, "size": 0, "_links": {"base": self.base_url}}, {}
            pages = sorted(self.pages.values(), key=lambda p: int(p.id))
            return self._offsets("/rest/api/content", query, pages, lambda p: self._dc_page(p, query))
        if parts[:3] == ["rest", "api", "content"] and len(parts) == 4:
            page = self.pages.get(parts[3])
            if page is None:
                return 404, {"statusCode": 404, "message": f"No content found with id: ContentId{{id={parts[3]}}}"}, {}
            return 200, self._dc_page(page, query), {}
        if parts[:3] == ["rest", "api", "content"] and parts[4:] == ["child", "attachment"] and parts[3] in self.pages:
            page = self.pages[parts[3]]
            items = [(aid, page, *rest) for aid, rest in sorted(page.attachments.items())]
            return self._offsets(f"/rest/api/content/{page.id}/child/attachment", query, items, self._dc_attachment)
        if parts[:2] == ["download", "attachments"] or parts[4:] == ["restriction", "byOperation", "read"]:
            return self._answer_common(parts, query)
        return 404, {"message": "No route"}, {}

    def _offsets(self, path: str, query: dict, items: list, render):
        try:
            start, limit = int(query.get("start", 0)), int(query.get("limit", 25))
        except ValueError:
            return 400, {"statusCode": 400, "message": "start and limit must be numbers"}, {}
        limit = max(1, min(limit, self.page_size, 100))  # Data Center caps the limit silently
        chunk = items[start : start + limit]
        links = {"base": self.base_url, "context": self.context}
        if start + limit < len(items):
            rest = "&".join(f"{k}={v}" for k, v in query.items() if k not in ("start", "limit"))
            links["next"] = f"{path}?{rest}&limit={limit}&start={start + limit}"
        return 200, {"results": [render(i) for i in chunk], "start": start, "limit": limit, "size": len(chunk),
                     "_links": links}, {}

    def _dc_page(self, page: Page, query: dict) -> dict:
        expand = set(query.get("expand", "").split(","))
        item = {"id": page.id, "type": "page", "status": "current", "title": page.title,
                "_links": {"webui": f"/display/{self.space_key}/{quote(page.title.replace(' ', '+'))}",
                           "tinyui": f"/x/{page.id}"}}
        if "version" in expand:
            item["version"] = {"number": page.version, "when": page.created_at, "by": {"username": "docs"}}
        if "ancestors" in expand:
            chain, current = [], page.parent
            while current:
                chain.insert(0, {"id": current, "type": "page"})
                current = self.pages[current].parent if current in self.pages else None
            item["ancestors"] = chain
        if "body.storage" in expand:
            item["body"] = {"storage": {"value": page.body, "representation": "storage"}}
        return item

    def _dc_attachment(self, item) -> dict:
        attachment_id, page, name, data, version = item
        return {"id": attachment_id, "type": "attachment", "status": "current", "title": name,
                "version": {"number": version, "when": page.created_at},
                "extensions": {"mediaType": "application/pdf", "fileSize": len(data)},
                "_links": {"download": f"/download/attachments/{page.id}/{quote(name)}?version={version}&api=v2",
                           "webui": f"/pages/viewpageattachments.action?pageId={page.id}&preview={quote(name)}"}}

    def _list(self, path: str, query: dict, items: list, render):
        try:
            limit = int(query.get("limit", 25))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            return 400, {"errors": [{"status": 400, "code": "INVALID_REQUEST_PARAMETER",
                                     "title": "limit must be between 1 and 250"}]}, {}
        start = 0
        if "cursor" in query:
            if query["cursor"] not in self._cursors:
                return 400, {"errors": [{"status": 400, "code": "INVALID_REQUEST_PARAMETER", "title": "Invalid cursor"}]}, {}
            start = self._cursors[query["cursor"]]
        size = min(limit, self.page_size)
        chunk = items[start : start + size]
        links = {"base": self.base_url}
        headers = {}
        if start + size < len(items):
            cursor = secrets.token_urlsafe(12)
            self._cursors[cursor] = start + size
            rest = "&".join(f"{k}={v}" for k, v in query.items() if k != "cursor")
            links["next"] = f"{path}?{rest}&cursor={cursor}" if rest else f"{path}?cursor={cursor}"
            headers["Link"] = f'<{links["next"]}>; rel="next", <{self.base_url}>; rel="base"'
        return 200, {"results": [render(item) for item in chunk], "_links": links}, headers

    def _space(self) -> dict:
        return {"id": self.space_id, "key": self.space_key, "name": "Engineering", "type": "global",
                "status": "current", "_links": {"webui": f"/spaces/{self.space_key}"}}

    def _page_json(self, page: Page) -> dict:
        return {
            "id": page.id, "status": "current", "title": page.title, "spaceId": self.space_id,
            "parentId": page.parent, "parentType": "page" if page.parent else None, "authorId": "557058:abc",
            "createdAt": page.created_at,
            "version": {"number": page.version, "message": "", "minorEdit": False, "authorId": "557058:abc",
                        "createdAt": page.created_at},
            "_links": {"webui": f"/spaces/{self.space_key}/pages/{page.id}/{quote(page.title.replace(' ', '+'))}",
                       "editui": f"/pages/resumedraft.action?draftId={page.id}", "tinyui": f"/x/{page.id}"},
        }

    def _attachment_json(self, item) -> dict:
        attachment_id, page, name, data, version = item
        return {
            "id": attachment_id, "status": "current", "title": name, "mediaType": "application/pdf",
            "fileSize": len(data), "pageId": page.id, "version": {"number": version, "createdAt": page.created_at},
            "downloadLink": f"/download/attachments/{page.id}/{quote(name)}?version={version}&api=v2",
            "webuiLink": f"/spaces/{self.space_key}/pages/{page.id}/{quote(page.title)}?preview=/{page.id}/{attachment_id}/{quote(name)}",
        }
