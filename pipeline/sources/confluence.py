"""A Confluence space as a source: Cloud through the REST API v2 (and v1 for view restrictions,
which v2 does not expose), Data Center through its REST API (offset pagination, a personal access
token as Bearer).

- The space's pages are listed with their version numbers (cursor pagination, `_links.next`); a
  page's body (storage-format XHTML, read section by section as HTML) is fetched only when its
  version changed. A page is known by its id, so a renamed or moved page is one page.
- View restrictions: a page restricted to some people, or under a restricted ancestor, is skipped
  unless the source opts in (`include_restricted`): in a collection it would reach every channel
  that searches it. Checked every run (a restriction can change without a new version).
- PDF attachments (`attachments = true`) are synced by their own version numbers.
- 401/403 on the listing fails the run (a wrong token must not look like an empty space); 429 waits
  for Retry-After and tries again, at most RATE_LIMIT_TRIES times.

httpx does HTTP: atlassian-python-api wraps the v1 API (and requests), not v2's cursor pagination,
and the calls needed are few.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from html import escape
from urllib.parse import urljoin, urlsplit

import httpx

from pipeline.indexing import MAX_FILE_BYTES, RemoteDocument
from pipeline.sources.config import ConfluenceSource
from pipeline.sources.engine import Fetched, Listing, SourceError
from pipeline.sources.website import MAX_RETRY_AFTER, RATE_LIMIT_TRIES, _retry_after

log = logging.getLogger("teambot.sync.confluence")
PAGE_LIMIT = 250  # v2's largest page of results
DC_PAGE_LIMIT = 100  # Data Center's REST API caps content lists lower


class ConfluenceConnector:
    def __init__(self, source: ConfluenceSource, *, sleep=time.sleep) -> None:
        self.source = source
        token = os.environ.get(source.token_env, "")
        if not token:
            raise SourceError(f"no Confluence API token: set {source.token_env}")
        parts = urlsplit(source.base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.cloud = source.deployment == "cloud"
        headers = {"Accept": "application/json"}
        if not source.email:  # a Data Center personal access token
            headers["Authorization"] = f"Bearer {token}"
        self.client = httpx.Client(timeout=source.timeout, auth=(source.email, token) if source.email else None,
                                   follow_redirects=False, headers=headers)
        self.sleep = sleep

    def close(self) -> None:
        self.client.close()

    def documents(self, known: dict, listing: Listing) -> Iterator[Fetched]:
        pages = self._pages(listing)
        listing.total = len(pages)
        restricted = set() if self.source.include_restricted else self._restricted(pages, listing)
        for page_id, page in pages.items():
            if page_id in restricted:
                listing.withdrawn.add(f"page:{page_id}")  # restricted since it was synced, if it was
                attached = f"{self.source.base_url}/pages/viewpage.action?pageId={page_id}#attachment-"
                listing.withdrawn.update(k for k, item in known.items() if item.document.startswith(attached))
                continue
            key = f"page:{page_id}"
            listing.present.add(key)
            version = str(page["version"]["number"])
            if (before := known.get(key)) is None or before.version != version:
                if (fetched := self._page(key, page_id, version, listing)) is None:
                    listing.present.discard(key)  # deleted since it was listed
                    continue
                yield fetched
            if self.source.attachments:
                yield from self._attachments(page_id, known, listing)

    # ------------------------------------------------------------------ pages

    def _pages(self, listing: Listing) -> dict[str, dict]:
        """id → {title, parentId, version: {number, createdAt}, _links: {webui}} of the space's pages."""
        if self.cloud:
            space = self._space_id(listing)
            return {p["id"]: p for p in self._all(f"{self.source.base_url}/api/v2/spaces/{space}/pages",
                                                  {"limit": PAGE_LIMIT, "status": "current"}, listing)}
        if self._json(f"{self.source.base_url}/rest/api/space/{self.source.space}", {}, listing,
                      missing_ok=True) is None:
            raise SourceError(f"no space {self.source.space} at {self.source.base_url} (or the account cannot see it)")
        pages = {}
        params = {"spaceKey": self.source.space, "type": "page", "status": "current", "expand": "version,ancestors",
                  "limit": DC_PAGE_LIMIT}
        for item in self._all(f"{self.source.base_url}/rest/api/content", params, listing):
            if "ancestors" not in item or "version" not in item:  # without them restrictions and changes go unseen
                raise SourceError(f"page {item.get('id')} was listed without its ancestors or version")
            pages[item["id"]] = _from_datacenter(item)
        return pages

    def _space_id(self, listing: Listing) -> str:
        found = self._json(f"{self.source.base_url}/api/v2/spaces", {"keys": self.source.space}, listing)["results"]
        if not found:
            raise SourceError(f"no space {self.source.space} at {self.source.base_url} (or the account cannot see it)")
        return found[0]["id"]

    def _page(self, key: str, page_id: str, version: str, listing: Listing) -> Fetched | None:
        if self.cloud:
            page = self._json(f"{self.source.base_url}/api/v2/pages/{page_id}", {"body-format": "storage"}, listing,
                              missing_ok=True)
        else:
            page = self._json(f"{self.source.base_url}/rest/api/content/{page_id}",
                              {"expand": "body.storage,version"}, listing, missing_ok=True)
            page = page and _from_datacenter(page)
        if page is None:
            return None
        title = page.get("title") or page_id
        body = ((page.get("body") or {}).get("storage") or {}).get("value") or ""
        html = (f"<html><head><title>{escape(title)}</title></head><body><h1>{escape(title)}</h1>{body}"
                "</body></html>").encode()
        changed = _when(page["version"].get("createdAt"))
        document = RemoteDocument(
            source=f"{self.source.base_url}/pages/viewpage.action?pageId={page_id}", data=html, kind="html",
            url=self._web_link(page), root=f"sync:{self.source.name}", updated=changed.isoformat(),
            url_base=self.source.base_url,
        )
        return Fetched(key, document, changed, version=version)

    def _web_link(self, item: dict) -> str:
        webui = (item.get("_links") or {}).get("webui") or item.get("webuiLink") or ""
        link = f"{self.source.base_url}{webui}" if webui.startswith("/") else ""
        # Only a link into this site: the API's answer is not a reason to link elsewhere.
        return link if link.startswith(self.source.base_url + "/") else ""

    def _restricted(self, pages: dict[str, dict], listing: Listing) -> set[str]:
        """Pages with a read restriction of their own or on an ancestor in the space."""
        own = {page_id for page_id in pages if self._has_read_restriction(page_id, listing)}
        restricted = set()
        for page_id in pages:
            seen, current = set(), page_id
            while current in pages and current not in seen:
                if current in own:
                    restricted.add(page_id)
                    break
                seen.add(current)
                current = pages[current].get("parentId")
        if restricted:
            log.info("%s: %d pages with view restrictions skipped", self.source.name, len(restricted))
        return restricted

    def _has_read_restriction(self, page_id: str, listing: Listing) -> bool:
        answer = self._json(f"{self.source.base_url}/rest/api/content/{page_id}/restriction/byOperation/read",
                            {"expand": "restrictions.user,restrictions.group"}, listing)
        restrictions = answer.get("restrictions")
        if not isinstance(restrictions, dict):
            return True  # an answer that does not say proves nothing: restricted until it does
        for kind in ("user", "group"):
            entry = restrictions.get(kind)
            if not isinstance(entry, dict):
                return True
            size = entry.get("size")
            if (size if isinstance(size, int) else len(entry.get("results") or [None])) > 0:
                return True
        return False

    def _attachments(self, page_id: str, known: dict, listing: Listing) -> Iterator[Fetched]:
        if self.cloud:
            items = self._all(f"{self.source.base_url}/api/v2/pages/{page_id}/attachments",
                              {"limit": PAGE_LIMIT, "mediaType": "application/pdf"}, listing)
        else:
            items = map(_from_datacenter, self._all(
                f"{self.source.base_url}/rest/api/content/{page_id}/child/attachment",
                {"expand": "version", "mediaType": "application/pdf", "limit": DC_PAGE_LIMIT}, listing,
            ))
        for item in items:
            key = f"attachment:{item['id']}"
            version = str(item["version"]["number"])
            listing.present.add(key)
            if (before := known.get(key)) is not None and before.version == version:
                continue
            if int(item.get("fileSize") or 0) > MAX_FILE_BYTES:
                listing.errors.append(f"{item.get('title')}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
                continue
            download = urljoin(self.source.base_url + "/", (item.get("downloadLink") or "").lstrip("/"))
            if not download.startswith(self.source.base_url + "/"):
                listing.errors.append(f"{item.get('title')}: its download link leaves the site")
                continue
            data = self._get(download, {}, listing).content
            changed = _when(item["version"].get("createdAt"))
            document = RemoteDocument(
                source=f"{self.source.base_url}/pages/viewpage.action?pageId={page_id}#attachment-{item['id']}",
                data=data, kind="pdf", url=self._web_link(item), root=f"sync:{self.source.name}",
                updated=changed.isoformat(), url_base=self.source.base_url,
            )
            yield Fetched(key, document, changed, version=version)

    # ------------------------------------------------------------------ HTTP

    def _all(self, url: str, params: dict, listing: Listing) -> Iterator[dict]:
        """Every result of a cursor-paginated v2 list."""
        seen = set()
        while url:
            answer = self._json(url, params, listing)
            yield from answer.get("results") or []
            following = (answer.get("_links") or {}).get("next")
            # `next` carries every parameter: Cloud's is a path on the site ("/wiki/api/v2/…?cursor=…"),
            # Data Center's a path under the wiki's address ("/rest/api/content?…&start=100").
            root = self.origin if self.cloud else self.source.base_url
            url, params = (root + "/" + following.lstrip("/"), {}) if following else ("", {})
            if url and not url.startswith(self.source.base_url + "/"):
                raise SourceError(f"the next page of results is off the site: {url}")
            if url in seen:
                raise SourceError(f"the results' next page repeats ({url}): the listing does not end")
            seen.add(url)

    def _json(self, url: str, params: dict, listing: Listing, *, missing_ok: bool = False) -> dict | None:
        response = self._get(url, params, listing, missing_ok=missing_ok)
        if response is None:
            return None
        try:
            return response.json()
        except ValueError:
            raise SourceError(f"{url}: not JSON (HTTP {response.status_code})") from None

    def _get(self, url: str, params: dict, listing: Listing, *, missing_ok: bool = False) -> httpx.Response | None:
        for attempt in range(RATE_LIMIT_TRIES):
            listing.requests += 1
            try:
                # params=None, not {}: httpx drops a URL's own query string for an empty params.
                response = self.client.get(url, params=params or None)
            except httpx.HTTPError as exc:
                raise SourceError(f"cannot reach {urlsplit(url).netloc}: {exc}") from None
            if response.status_code == 429:
                wait = _retry_after(response.headers.get("retry-after"))
                if attempt + 1 == RATE_LIMIT_TRIES or wait > MAX_RETRY_AFTER:
                    raise SourceError(f"{urlsplit(url).netloc} keeps answering 429 (rate limited); try later")
                self.sleep(wait)
                continue
            if response.status_code in (401, 403):
                raise SourceError(f"{url}: HTTP {response.status_code}: check {self.source.email}'s API token "
                                  f"({self.source.token_env}) and its access to space {self.source.space}")
            if response.status_code == 404 and missing_ok:
                return None
            if response.status_code != 200:
                raise SourceError(f"{url}: HTTP {response.status_code}")
            return response
        raise SourceError(f"{urlsplit(url).netloc} keeps answering 429 (rate limited); try later")


def _from_datacenter(item: dict) -> dict:
    """A Data Center REST content item in the shape of Cloud v2's: parentId from the ancestors,
    the version's date as createdAt, the download link where v2 has it."""
    version = item.get("version") or {}
    ancestors = item.get("ancestors") or []
    links = item.get("_links") or {}
    extensions = item.get("extensions") or {}
    return {
        **item, "parentId": ancestors[-1]["id"] if ancestors else None,
        "version": {"number": version.get("number", 0), "createdAt": version.get("when")},
        "downloadLink": links.get("download"), "fileSize": extensions.get("fileSize"),
        "mediaType": extensions.get("mediaType"),
    }


def _when(value: str | None) -> datetime:
    try:
        moment = datetime.fromisoformat((value or "").replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    except ValueError:
        return datetime.now(timezone.utc)
