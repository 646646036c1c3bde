"""A Google Drive folder as a source, through Google's own client (google-api-python-client: the
Drive v3 surface from its bundled discovery document, paging, retries of 429/5xx and rate-limit
403s with backoff) and a service account's key (google-auth).

- The folder is walked breadth-first (`'<id>' in parents`), subfolders included, shortcuts not
  followed (they lead out of the folder); a file's path in the folder is what `include`/`exclude`
  match.
- A file is known by its id (a rename or a move inside the folder is one file) and re-read only when
  its `version` changed.
- Sharing decides what is taken: a file must be readable by the whole `domain` or by anyone with the
  link, unless the source opts in. Checked every run (one permissions call a file: a folder's
  sharing changes its files' without a version of theirs), so a file whose sharing narrows is
  removed at the next run.
- Docs are exported as HTML (headings become sections), Sheets as HTML per sheet (all sheets, where
  CSV would give only the first), Slides as text; PDFs, Markdown, HTML and text files are
  downloaded. Other types are left out.
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from html import escape
from urllib.parse import urlsplit

from lxml import etree
from lxml import html as lxml_html

from pipeline.indexing import MAX_FILE_BYTES, RemoteDocument
from pipeline.sources.config import GoogleDriveSource
from pipeline.sources.engine import Fetched, Listing, SourceError

log = logging.getLogger("teambot.sync.drive")
SCOPE = "https://www.googleapis.com/auth/drive.readonly"
FOLDER = "application/vnd.google-apps.folder"
PAGE_SIZE = 1000  # files.list's largest page
RETRIES = 4  # the client's own retries of 429, 5xx and rate-limit 403s (exponential backoff)
FILE_FIELDS = "nextPageToken, files(id,name,mimeType,version,modifiedTime,size,webViewLink,driveId)"
# mimeType → (how it is read: an export format or "media", the kind it is ingested as)
READ = {
    "application/vnd.google-apps.document": ("text/html", "html"),
    "application/vnd.google-apps.spreadsheet": ("application/zip", "html"),
    "application/vnd.google-apps.presentation": ("text/plain", "text"),
    "application/pdf": ("media", "pdf"),
    "text/markdown": ("media", "markdown"),
    "text/x-markdown": ("media", "markdown"),
    "text/html": ("media", "html"),
    "text/plain": ("media", "text"),
}


class DriveConnector:
    def __init__(self, source: GoogleDriveSource) -> None:
        import httplib2
        from google.auth.exceptions import DefaultCredentialsError, MalformedError
        from google.oauth2 import service_account
        from google_auth_httplib2 import AuthorizedHttp

        with warnings.catch_warnings():  # google.api_core's note on the grpcio Weaviate's client pins
            warnings.simplefilter("ignore", FutureWarning)
            from googleapiclient.discovery import build

        self.source = source
        key_file = os.environ.get(source.credentials_env, "")
        if not key_file:
            raise SourceError(f"no Google credentials: set {source.credentials_env} to a service account's key file")
        try:
            credentials = service_account.Credentials.from_service_account_file(key_file, scopes=[SCOPE])
        except (OSError, ValueError, KeyError, MalformedError, DefaultCredentialsError) as exc:
            raise SourceError(f"cannot use the service account key {key_file}: {exc}") from None
        http = AuthorizedHttp(credentials, http=httplib2.Http(timeout=source.timeout))
        options = {"api_endpoint": source.endpoint} if source.endpoint else None
        self.service = build("drive", "v3", http=http, cache_discovery=False, static_discovery=True,
                             client_options=options)
        self.corpus = {"supportsAllDrives": True, "includeItemsFromAllDrives": True,
                       **({"corpora": "drive", "driveId": source.drive} if source.drive else {"corpora": "user"})}

    def close(self) -> None:
        self.service.close()

    def documents(self, known: dict, listing: Listing) -> Iterator[Fetched]:
        files = self._walk(listing)
        listing.total = len(files)
        for path, item in files:
            how = READ.get(item.get("mimeType", ""))
            if how is None or not self.source.wants(path):
                continue
            key, version = f"file:{item['id']}", str(item.get("version", ""))
            if key in listing.present:  # a file with two parents in the folder
                continue
            before = known.get(key)
            # Checked every run: a folder's sharing changes what its files inherit without a new
            # version of theirs. A file no longer shared with the domain is withdrawn at once.
            shared = True if self.source.include_unshared else self._shared(item, path, listing)
            if shared is False:
                listing.withdrawn.add(key)
                continue
            if shared is None:  # could not tell this time: kept as it was, or not taken yet
                if before is not None:
                    listing.present.add(key)
                continue
            listing.present.add(key)
            if before is not None and before.version == version:
                continue
            data = self._read(item, path, how[0], listing)
            if data is None:
                continue
            changed = _when(item.get("modifiedTime"))
            link = item.get("webViewLink") or f"https://drive.google.com/open?id={item['id']}"
            parts = urlsplit(link)
            document = RemoteDocument(
                source=f"https://drive.google.com/open?id={item['id']}", data=data, kind=how[1], url=link,
                root=f"sync:{self.source.name}", updated=changed.isoformat(),
                url_base=f"{parts.scheme}://{parts.netloc}/", name=path,
            )
            yield Fetched(key, document, changed, version=version)

    # ------------------------------------------------------------------ listing

    def _walk(self, listing: Listing) -> list[tuple[str, dict]]:
        """(path in the folder, file) of every file under the folder."""
        found, queue, seen = [], [(self.source.folder, "")], {self.source.folder}
        while queue:
            folder, prefix = queue.pop(0)
            request = self.service.files().list(q=f"'{folder}' in parents and trashed = false", pageSize=PAGE_SIZE,
                                                fields=FILE_FIELDS, **self.corpus)
            while request is not None:
                answer = self._execute(request, listing, f"cannot list the folder {prefix or folder}")
                for item in answer.get("files") or []:
                    path = prefix + item.get("name", item["id"]).replace("/", "∕")
                    if item.get("mimeType") == FOLDER:
                        if item["id"] not in seen:
                            seen.add(item["id"])
                            queue.append((item["id"], path + "/"))
                    else:
                        found.append((path, item))
                request = self.service.files().list_next(request, answer)
        return found

    def _shared(self, item: dict, path: str, listing: Listing) -> bool | None:
        """Can every member of the domain read it (or anyone with the link)? None: Drive could not
        say this time (a 5xx)."""
        request = self.service.permissions().list(fileId=item["id"], supportsAllDrives=True, pageSize=100,
                                                  fields="nextPageToken, permissions(type,domain,role)")
        try:
            while request is not None:
                answer = self._execute(request, listing, path, whole=False)
                for grant in answer.get("permissions") or []:
                    if grant.get("type") == "anyone" or (
                        grant.get("type") == "domain" and (grant.get("domain") or "").lower() == self.source.domain
                    ):
                        return True
                request = self.service.permissions().list_next(request, answer)
        except _Unreadable as exc:
            listing.errors.append(f"{path}: cannot read who may see it ({exc})")
            return None if exc.transient else False
        return False

    # ------------------------------------------------------------------ content

    def _read(self, item: dict, path: str, how: str, listing: Listing) -> bytes | None:
        if how == "media" and int(item.get("size") or 0) > MAX_FILE_BYTES:
            listing.errors.append(f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
            return None
        files = self.service.files()
        request = (files.get_media(fileId=item["id"], supportsAllDrives=True) if how == "media"
                   else files.export_media(fileId=item["id"], mimeType=how))
        try:
            data = self._execute(request, listing, path, whole=False)
        except _Unreadable as exc:
            listing.errors.append(f"{path}: {exc}")
            return None
        if how == "application/zip":
            try:
                return _sheets(item.get("name", ""), data)
            except ValueError as exc:
                listing.errors.append(f"{path}: {exc}")
                return None
        return data

    def _execute(self, request, listing: Listing, what: str, *, whole: bool = True):
        """Run one API call. A failure that concerns the whole source raises SourceError (nothing is
        deleted); one of a single file (`whole=False`) raises _Unreadable, for the caller to report."""
        import httplib2
        from google.auth.exceptions import RefreshError, TransportError
        from googleapiclient.errors import HttpError

        listing.requests += 1
        try:
            return request.execute(num_retries=RETRIES)
        except RefreshError as exc:
            raise SourceError(f"Google refused the service account's key: {_first(exc)}") from None
        except HttpError as exc:
            status, reason = exc.resp.status, _reason(exc)
            if status == 401:
                raise SourceError("Google refused the credentials (HTTP 401)") from None
            if status == 429 or reason.lower() in ("userratelimitexceeded", "ratelimitexceeded", "resource_exhausted"):
                raise SourceError(f"Google Drive keeps answering that the rate limit is exceeded ({what})") from None
            if whole:
                raise SourceError(f"{what}: HTTP {status} {reason}") from None
            raise _Unreadable(f"HTTP {status} {reason}", transient=status >= 500) from None
        except (httplib2.HttpLib2Error, TransportError, OSError) as exc:
            raise SourceError(f"cannot reach Google Drive: {exc}") from None


class _Unreadable(Exception):
    """One file could not be read; the rest of the run goes on."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def _reason(exc) -> str:
    """Drive's reason for an error (`errors[0].reason`, else its status), read from the body: the
    client's own `error_details` is a string for some bodies."""
    try:
        error = json.loads(exc.content).get("error") or {}
        first = (error.get("errors") or [{}])[0]
        return str(first.get("reason") or error.get("status") or exc.resp.reason or "")
    except (ValueError, AttributeError, TypeError, IndexError):
        return str(getattr(exc.resp, "reason", "") or "")


def _sheets(name: str, data: bytes) -> bytes:
    """A spreadsheet's HTML export (a zip of one page per sheet) as one page: a section per sheet."""
    parts = [f"<html><head><title>{escape(name)}</title></head><body><h1>{escape(name)}</h1>"]
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            left = MAX_FILE_BYTES  # what the sheets may add up to, unpacked
            for member in archive.infolist():
                if not member.filename.endswith(".html") or "/" in member.filename:
                    continue
                with archive.open(member) as stream:
                    html = stream.read(left + 1)
                left -= len(html)
                if left < 0:
                    raise ValueError(f"its sheets are larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB as HTML")
                try:
                    page = lxml_html.fromstring(html)
                except (etree.ParserError, ValueError):
                    continue
                tables = "".join(lxml_html.tostring(t, encoding="unicode") for t in page.xpath("//table"))
                parts.append(f"<h2>{escape(member.filename.removesuffix('.html'))}</h2>{tables}")
    except (zipfile.BadZipFile, NotImplementedError, EOFError, zlib.error) as exc:
        raise ValueError(f"not a readable export of its sheets: {exc}") from None
    return ("".join(parts) + "</body></html>").encode()


def _when(value: str | None) -> datetime:
    try:
        moment = datetime.fromisoformat((value or "").replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(timezone.utc)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _first(exc: Exception) -> str:
    return str(exc.args[0] if exc.args else exc)
