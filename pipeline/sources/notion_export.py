"""A Notion workspace's or page's export (Settings → Export, "Markdown & CSV") as a source. Each page
is `<Title> <32-hex id>.md`, its subpages in the folder `<Title> <id>/`; a database is a CSV beside a
folder holding each of its rows as a page, so its rows come in as pages (the CSV itself is left
out). A page is known by its id, so a renamed or moved page is one page; links go to
`<base_url>/<id>`. Large exports come as zips of parts inside the zip: all parts are read.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from pipeline.sources.exports import ExportConnector

_ID = re.compile(r"(?:^|[ -])([0-9a-f]{32})$")


class NotionExportConnector(ExportConnector):
    parts = True

    def kind_of(self, name: str) -> str | None:
        suffix = PurePosixPath(name).suffix.lower()
        if suffix == ".md" and _page_id(name):
            return "markdown"
        if suffix == ".pdf" and self.source.attachments:
            return "pdf"
        return None

    def key_of(self, name: str) -> str:
        page_id = _page_id(name)
        return f"page:{page_id}" if page_id else f"file:{name}"

    def link(self, name: str) -> str:
        page_id = _page_id(name) or _owner(name)
        return f"{self.source.base_url}/{page_id}" if self.source.base_url and page_id else ""


def _page_id(name: str) -> str:
    path = PurePosixPath(name)
    if path.suffix.lower() != ".md":
        return ""
    match = _ID.search(path.stem)
    return match.group(1) if match else ""


def _owner(name: str) -> str:
    """The page a file (an attachment) sits under: the id of its folder."""
    match = _ID.search(PurePosixPath(name).parent.name)
    return match.group(1) if match else ""
