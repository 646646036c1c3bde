"""A website as a source: its sitemaps and/or a crawl from start pages, all under one URL prefix.

- Only conditional requests for pages seen before (If-None-Match with the ETag, If-Modified-Since
  with the Last-Modified the server gave): an unchanged page costs a 304, not a download and an
  embedding. A server that ignores them still costs no embedding (the content hash is the same).
- robots.txt is honoured for the configured user agent (RFC 9309: a missing file allows all, a
  server error disallows all for this run).
- A page's key is its canonical URL when the page names one on the site's own hosts and under the
  prefix; a canonical link elsewhere is ignored (a page cannot have its chunks cited as another
  site's). A redirect counts as the page it lands on, so a renamed page is one page.
- Gone means gone: a page drops out when its sitemap stops listing it, or answers 404/410. A page
  that fails otherwise (5xx, 401/403, timeout) keeps its last good version. A 429 waits for
  Retry-After (at most MAX_RETRY_AFTER) and tries again; a source that stays rate limited or
  unreachable fails the run, which then deletes nothing.

httpx (already the Ollama client's) does HTTP; lxml parses sitemaps and pages; urllib.robotparser
reads robots.txt.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import httpx
from lxml import etree
from lxml import html as lxml_html

from pipeline.indexing import MAX_FILE_BYTES, RemoteDocument
from pipeline.sources.config import WebsiteSource
from pipeline.sources.engine import Fetched, Listing, SourceError

log = logging.getLogger("teambot.sync.website")
MAX_RETRY_AFTER = 120.0  # seconds a 429 is waited out, at most
RATE_LIMIT_TRIES = 3
DOWN_AFTER = 5  # connection failures in a row that mean the site is down
SITEMAP_DEPTH = 3  # sitemap index → sitemap → …
MAX_REDIRECTS = 5
CRAWLED = "crawled"  # the cursor of a website whose last crawl was complete
KINDS = {"text/html": "html", "application/xhtml+xml": "html", "application/pdf": "pdf",
         "text/markdown": "markdown", "text/plain": "text"}
_XML = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, recover=False)


class WebsiteConnector:
    def __init__(self, source: WebsiteSource, cursor: str | None = None, *, sleep=time.sleep) -> None:
        self.source = source
        self.cursor = cursor
        self.hosts = {urlsplit(source.prefix).netloc.lower(), *(h.lower() for h in source.hosts)}
        self.client = httpx.Client(
            timeout=source.timeout, follow_redirects=False,
            headers={"User-Agent": source.user_agent},
        )
        self.sleep = sleep
        self._robots: dict[str, RobotFileParser] = {}
        self._down = 0

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ listing

    def documents(self, known: dict, listing: Listing) -> Iterator[Fetched]:
        lastmod: dict[str, str] = {}
        for sitemap in self.source.sitemaps:
            self._read_sitemap(sitemap, lastmod, listing, depth=0)
        crawl = bool(self.source.start_urls)
        # A crawl learns links only from pages it downloads: after an unfinished crawl (killed,
        # stopped at max_pages) every page is downloaded again, or pages linked only from
        # unchanged ones would never be found.
        conditional = not crawl or self.cursor == CRAWLED
        queue = deque(dict.fromkeys([*lastmod, *self.source.start_urls, *(known if crawl else ())]))
        queued = set(queue)
        listing.total = len(queue)
        visited = 0
        while queue:
            url = queue.popleft()
            if not self._wanted(url):
                continue
            if visited >= self.source.max_pages:
                listing.complete = False  # what was not visited is not known to be gone
                log.warning("%s: stopped at max_pages=%d", self.source.name, self.source.max_pages)
                break
            visited += 1
            item, links = self._fetch(url, known if conditional else {}, known.get(url), lastmod.get(url), listing,
                                      crawl)
            if item is not None:
                yield item
            for link in links:
                if link not in queued and self._wanted(link):
                    queued.add(link)
                    queue.append(link)
                    listing.total += 1
        if crawl and listing.complete:
            listing.cursor = CRAWLED

    def _read_sitemap(self, url: str, lastmod: dict[str, str], listing: Listing, depth: int) -> None:
        response = self._get(url, {}, listing)
        if response is None or response.status_code != 200:
            status = "no answer" if response is None else f"HTTP {response.status_code}"
            raise SourceError(f"sitemap {url}: {status}")
        body = response.content
        if body[:2] == b"\x1f\x8b":
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                body = inflate.decompress(body, MAX_FILE_BYTES + 1)
            except zlib.error as exc:
                raise SourceError(f"sitemap {url}: not gzip: {exc}") from None
            if len(body) > MAX_FILE_BYTES:
                raise SourceError(f"sitemap {url}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB unpacked")
        try:
            root = etree.fromstring(body, _XML)
        except etree.XMLSyntaxError as exc:
            raise SourceError(f"sitemap {url} is not XML: {exc}") from None
        for entry in root:
            loc = _child_text(entry, "loc")
            if not loc:
                continue
            loc = urljoin(url, loc)
            if etree.QName(root).localname == "sitemapindex":
                if depth < SITEMAP_DEPTH and self._own(loc):
                    self._read_sitemap(loc, lastmod, listing, depth + 1)
                else:  # its pages are not listed, not gone
                    log.warning("%s: sitemap %s not read (another host, or nested too deep)", self.source.name, loc)
                    listing.complete = False
            elif self._wanted(_strip(loc)):
                lastmod[_strip(loc)] = _child_text(entry, "lastmod")

    # ------------------------------------------------------------------ one page

    def _fetch(self, url: str, validators: dict, before, lastmod: str | None, listing: Listing, crawl: bool):
        """One page: (what to write, or None; the links to follow). `validators`: the known pages
        whose ETag/Last-Modified may be sent; `before`: what is known of this one."""
        headers = {}
        if (cached := validators.get(url)) is not None and cached.etag:
            headers["If-None-Match"] = cached.etag
        if cached is not None and cached.last_modified:
            headers["If-Modified-Since"] = cached.last_modified
        response = self._get(url, headers, listing)
        if response is None:
            return self._kept(url, before, listing, "no answer"), ()
        status = response.status_code
        if response.redirect:  # to another host: never followed
            if before is not None:  # a known page behind a login now, say: kept, not deleted
                return self._kept(url, before, listing, f"redirected off the site ({status})"), ()
            return None, ()
        if status == 304:
            listing.not_modified += 1
            listing.present.add(url)
            return None, ()
        if status in (404, 410):
            return None, ()  # gone
        if status != 200:
            return self._kept(url, before, listing, f"HTTP {status}"), ()
        final = _strip(response.url)
        if final != url and not self._wanted(final):
            if before is not None:
                return self._kept(url, before, listing, f"redirected out of the source to {final}"), ()
            return None, ()  # redirected out of the prefix: not this source's page
        kind = KINDS.get(response.headers.get("content-type", "").split(";")[0].strip().lower())
        if kind is None:
            return None, ()
        if len(response.content) > MAX_FILE_BYTES:
            return self._kept(url, before, listing, f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB"), ()
        data = response.content
        key, links = final, ()
        if kind == "html":
            key, links, data = self._read_html(final, data, crawl)
        if key in listing.present:
            return None, links  # the same page under another address (canonical, redirect)
        listing.present.add(key)
        changed = _changed_at(response.headers.get("last-modified"), lastmod, before, data, key)
        document = RemoteDocument(source=key, data=data, kind=kind, url=key, root=f"sync:{self.source.name}",
                                  updated=changed.isoformat(), url_base=self.source.prefix)
        return Fetched(key, document, changed, etag=_validator(response.headers.get("etag"), 256),
                       last_modified=_validator(response.headers.get("last-modified"), 64)), links

    def _kept(self, url: str, before, listing: Listing, why: str):
        """A page that could not be had this time: a known one stays as it was. An address not known
        by that name may be a known page's alias (a redirect, a canonical link): nothing is deleted
        this run."""
        listing.errors.append(f"{url}: {why}")
        if before is not None:
            listing.present.add(url)
        else:
            listing.complete = False
        return None

    def _read_html(self, url: str, data: bytes, crawl: bool) -> tuple[str, list[str], bytes]:
        """(the page's key, the links to follow, the page without the site's boilerplate)."""
        try:
            page = lxml_html.fromstring(data, base_url=url)
        except (etree.ParserError, ValueError):
            return url, [], data
        key = url
        for href in page.xpath("//link[@rel='canonical']/@href")[:1]:
            canonical = _strip(urljoin(url, href.strip()))
            if self._wanted(canonical):
                key = canonical
        links = []
        if crawl:
            for href in page.xpath("//a/@href"):
                link = _strip(urljoin(url, href.strip()))
                if link.startswith(("http://", "https://")):
                    links.append(link)
        if self.source.skip_classes:
            boilerplate = " or ".join(
                f"contains(concat(' ', normalize-space(@class), ' '), ' {c} ')" for c in self.source.skip_classes
            )
            for element in page.xpath(f"//*[{boilerplate}]"):
                element.drop_tree()
            data = lxml_html.tostring(page, encoding="utf-8", doctype="<!DOCTYPE html>")
        return key, links, data

    # ------------------------------------------------------------------ HTTP

    def _get(self, url: str, headers: dict, listing: Listing) -> "_Answer | None":
        """GET with the rate-limit wait; None when the page could not be had (the site is not down)."""
        for attempt in range(RATE_LIMIT_TRIES):
            listing.requests += 1
            try:
                response = self._follow(url, headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                self._down += 1
                if self._down >= DOWN_AFTER or not listing.present:
                    raise SourceError(f"cannot reach {urlsplit(url).netloc}: {exc}") from None
                return None
            except httpx.HTTPError as exc:
                log.warning("%s: %s", url, exc)
                return None
            self._down = 0
            if response.status_code in (401, 407) and not listing.present:
                raise SourceError(f"{url}: HTTP {response.status_code}: the site wants credentials")
            if response.status_code != 429:
                return response
            wait = _retry_after(response.headers.get("retry-after"))
            if attempt + 1 == RATE_LIMIT_TRIES or wait > MAX_RETRY_AFTER:
                raise SourceError(f"{urlsplit(url).netloc} keeps answering 429 (rate limited); try later")
            log.info("%s: rate limited, waiting %.0fs", url, wait)
            self.sleep(wait)
        return None

    def _follow(self, url: str, headers: dict) -> "_Answer":
        """GET, following redirects only within the site's own hosts (a redirect elsewhere is
        answered as it is: never requested), reading at most MAX_FILE_BYTES of the body."""
        for _ in range(MAX_REDIRECTS + 1):
            request = self.client.build_request("GET", url, headers=headers)
            response = self.client.send(request, stream=True)
            try:
                location = response.headers.get("location")
                if response.is_redirect and location:
                    target = urljoin(url, location)
                    if not self._own(target):  # never requested: the caller sees a redirect off the site
                        return _Answer(response.status_code, response.headers, url, b"", redirect=True)
                    url = target
                    continue
                body, size = [], 0
                for block in response.iter_bytes():
                    body.append(block)
                    size += len(block)
                    if size > MAX_FILE_BYTES:
                        break
                return _Answer(response.status_code, response.headers, str(response.url),
                               b"".join(body)[: MAX_FILE_BYTES + 1])
            finally:
                response.close()
        raise httpx.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects from {url}", request=request)

    def _own(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and parts.netloc.lower() in self.hosts

    def _wanted(self, url: str) -> bool:
        """Under the prefix (on any of the site's hosts), matched by include/exclude, allowed by robots.txt."""
        if not self._own(url):
            return False
        prefix = urlsplit(self.source.prefix)
        parts = urlsplit(url)
        if parts.scheme != prefix.scheme or not parts.path.startswith(prefix.path or "/"):
            return False
        if not self.source.wants(parts.path[len(prefix.path.rstrip("/")) :].lstrip("/") or "/"):
            return False
        return self._robots_for(parts).can_fetch(self.source.user_agent, url)

    def _robots_for(self, parts) -> RobotFileParser:
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:
            robots = RobotFileParser(f"{origin}/robots.txt")
            try:
                response = self._follow(f"{origin}/robots.txt", {})
                status = 404 if response.redirect else response.status_code
            except httpx.HTTPError as exc:
                raise SourceError(f"cannot reach {parts.netloc}: {exc}") from None
            if status >= 500:
                # RFC 9309 §2.3.1.4: unreachable means disallow all. For this run, not for good: an
                # empty listing would delete the whole source.
                raise SourceError(f"{origin}/robots.txt: HTTP {status}; the site is not crawled this time")
            if status >= 400:
                robots.allow_all = True
            else:
                robots.parse(response.content.decode("utf-8", errors="replace").splitlines())
            self._robots[origin] = robots
        return self._robots[origin]


@dataclass(frozen=True)
class _Answer:
    """An HTTP answer, its body read (at most MAX_FILE_BYTES + 1 bytes)."""

    status_code: int
    headers: httpx.Headers
    url: str  # where it was answered from, after redirects on the site
    content: bytes
    redirect: bool = False  # a redirect off the site, not followed


def _validator(value: str | None, longest: int) -> str | None:
    # One too long to keep is not kept: the page is then asked for unconditionally.
    return value if value and len(value) <= longest else None


def _strip(url: str) -> str:
    return urldefrag(url)[0]


def _child_text(entry, name: str) -> str:
    for child in entry:
        if isinstance(child.tag, str) and etree.QName(child).localname == name:
            return (child.text or "").strip()
    return ""


def _retry_after(value: str | None) -> float:
    """Seconds a Retry-After asks for (a number or an HTTP date); 1 when it says nothing usable."""
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError, IndexError):
        return 1.0


def _changed_at(last_modified: str | None, lastmod: str | None, before, data: bytes, key: str) -> datetime:
    """When the page last changed: the server's Last-Modified, else the sitemap's lastmod, else the
    time it was last seen to change (now, unless its content is what was synced before)."""
    for value, parse in ((last_modified, email.utils.parsedate_to_datetime), (lastmod, datetime.fromisoformat)):
        if value:
            try:
                moment = parse(value)
                return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
            except (TypeError, ValueError):
                pass
    if before is not None and before.content_hash == _content_hash(data, key):
        return before.changed_at
    return datetime.now(timezone.utc)


def _content_hash(data: bytes, url: str) -> str:
    # As pipeline.indexing hashes a document: its bytes and its address.
    return hashlib.sha256(data + b"\0url:" + url.encode()).hexdigest()
