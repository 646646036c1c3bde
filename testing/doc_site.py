"""A documentation site on 127.0.0.1: a real tree of HTML pages (a Debian documentation package's)
served by the standard library's HTTP server, which answers conditional requests with 304 as web
servers do (If-Modified-Since against the file's mtime), with a sitemap made from the tree, a
robots.txt, and a log of every request with its status. Faults can be switched on: 429 with a
Retry-After, 401, or no answer at all.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SQLITE_DOCS = Path("/usr/share/doc/sqlite3/c3ref")  # Debian's sqlite3-doc: the C interface, one page per function


class _Handler(SimpleHTTPRequestHandler):
    site: "DocSite"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        fault = self.site.fault
        if fault == "robots500" and self.path == "/robots.txt":
            self.site.log(self.path, 500)
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault == "sso" and self.path.endswith(".html"):  # the site moved behind a login page elsewhere
            self.site.log(self.path, 302)
            self.send_response(302)
            self.send_header("Location", "https://login.example.com/sso?next=" + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault == "429":
            self.site.log(self.path, 429)
            self.send_response(429)
            self.send_header("Retry-After", str(self.site.retry_after))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault == "401":
            self.site.log(self.path, 401)
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="docs"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def send_response(self, code: int, message: str | None = None) -> None:
        if code not in (429, 401, 302, 500):
            self.site.log(self.path, code)
        super().send_response(code, message)

    def log_message(self, *args) -> None:
        pass


class DocSite:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.fault = ""  # "", "429", "401", "sso" (pages redirect to a login elsewhere), "robots500"
        self.retry_after = 1
        self.requests: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"site": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @classmethod
    def copy_of(cls, tree: Path, root: Path, *, folder: str = "docs") -> "DocSite":
        """Serve a copy of `tree` under /<folder>/ (a copy: tests edit, rename and delete pages)."""
        shutil.copytree(tree, root / folder)
        (root / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n")
        site = cls(root)
        site.folder = folder
        site.write_sitemap()
        return site

    def pages(self) -> list[Path]:
        return sorted((self.root / self.folder).rglob("*.html"))

    def page_url(self, path: Path) -> str:
        return f"{self.url}/{path.relative_to(self.root).as_posix()}"

    def write_sitemap(self, pages: list[Path] | None = None) -> None:
        entries = "".join(
            f"<url><loc>{self.page_url(p)}</loc><lastmod>{_iso(p)}</lastmod></url>"
            for p in (self.pages() if pages is None else pages)
        )
        (self.root / "sitemap.xml").write_text(
            f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"{entries}</urlset>\n"
        )

    @property
    def sitemap(self) -> str:
        return f"{self.url}/sitemap.xml"

    def log(self, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((path, status))

    def statuses(self, since: int = 0) -> Counter:
        """Status → count of the page requests (not robots.txt or the sitemap) since request `since`."""
        with self._lock:
            return Counter(status for path, status in self.requests[since:] if path.endswith(".html"))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _iso(path: Path) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
