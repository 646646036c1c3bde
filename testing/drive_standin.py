"""A stand-in of Google Drive's API v3 and Google's OAuth 2.0 token endpoint, as strict as the
reference (developers.google.com/workspace/drive/api/reference/rest/v3, and the service-account
flow of developers.google.com/identity/protocols/oauth2/service-account) for the calls teambot makes:

- `POST /token`: the JWT-bearer grant. The assertion must be an RS256 JWT signed by the service
  account's key (the stand-in made the key pair and wrote the key file), `iss` its email, `aud`
  Google's token endpoint (what the reference requires wherever the token URI points), a `scope`
  granting Drive read access, not expired; otherwise 400 `invalid_grant`.
- Every API call needs `Authorization: Bearer <a token it issued>`; otherwise 401 with Google's
  JSON error body.
- `GET /drive/v3/files`: `q` only as `'<folder id>' in parents and trashed = false` (anything else
  is a 400 invalidQuery), `pageSize` at least 1 (over 1,000 coerced), a `pageToken` it issued, `fields` honoured (a field
  not asked for is not returned), files of a shared drive only with `supportsAllDrives` and
  `includeItemsFromAllDrives`, `corpora=drive` only with a `driveId`.
- `GET /drive/v3/files/{id}?alt=media`: binary files only (403 fileNotDownloadable for Google Docs
  Editors files); `GET /drive/v3/files/{id}/export?mimeType=`: Docs Editors files only, in the
  formats each type exports to (400 otherwise), 403 exportSizeLimitExceeded over 10 MB.
- `GET /drive/v3/files/{id}/permissions`: paged like files; a shared drive's file is a 404 without
  `supportsAllDrives=true`, as are files the account cannot see.
- A file's `version` goes up with every change, its sharing included; `modifiedTime` with its content.
- Optional rate limit: after `budget` calls, 403 userRateLimitExceeded until `reset()`.
Every call is logged (path, status) for the tests to count.
"""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from testing.json_api import JsonApiHandler, serve

FOLDER = "application/vnd.google-apps.folder"
DOC = "application/vnd.google-apps.document"
SHEET = "application/vnd.google-apps.spreadsheet"
SLIDES = "application/vnd.google-apps.presentation"
EXPORTS = {  # the export formats of each Docs Editors type (a subset of the reference's list)
    DOC: {"text/html", "text/plain", "application/pdf", "text/markdown"},
    SHEET: {"application/zip", "text/csv", "application/pdf"},
    SLIDES: {"text/plain", "application/pdf"},
}
EXPORT_LIMIT = 10 * 1024 * 1024
AUDIENCE = "https://oauth2.googleapis.com/token"
READ_SCOPES = {"https://www.googleapis.com/auth/drive.readonly", "https://www.googleapis.com/auth/drive"}
_QUERY = re.compile(r"^\s*'([A-Za-z0-9_-]+)' in parents and trashed\s*=\s*false\s*$")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class File:
    id: str
    name: str
    mime_type: str
    parent: str
    content: bytes | dict[str, list[list[str]]]  # a sheet: tab name → rows
    drive: str | None = None  # a shared drive's id
    permissions: list[dict] = field(default_factory=list)
    version: int = 1
    modified: str = field(default_factory=_now)
    trashed: bool = False

    def web_link(self) -> str:
        kind = {DOC: "document", SHEET: "spreadsheets", SLIDES: "presentation"}.get(self.mime_type)
        if kind:
            return f"https://docs.google.com/{kind}/d/{self.id}/edit?usp=drivesdk"
        if self.mime_type == FOLDER:
            return f"https://drive.google.com/drive/folders/{self.id}"
        return f"https://drive.google.com/file/d/{self.id}/view?usp=drivesdk"


class DriveStandin:
    def __init__(self) -> None:
        self.files: dict[str, File] = {}
        self.page_size = 1000  # at most this many results per page, whatever pageSize asked
        self.budget: int | None = None
        self.calls: list[tuple[str, int]] = []
        self.revoked = False  # the key was deleted: the token endpoint refuses it
        self._tokens: set[str] = set()
        self._page_tokens: dict[str, int] = {}
        self._lock = threading.Lock()
        self.email = "teambot-sync@acme-prod.iam.gserviceaccount.com"
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        standin = self

        class Handler(JsonApiHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.reply(*standin._api(self.path, self.headers.get("Authorization", "")))

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                self.reply(*standin._token(self.path, self.rfile.read(length).decode()))

        self.server = serve(self, Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        self.api_endpoint = f"{self.origin}/drive/v3/"
        self.token_uri = f"{self.origin}/token"

    # ------------------------------------------------------------------ the drive, as tests change it

    def key_file(self, folder: Path) -> Path:
        """The service account's JSON key, as the Cloud console downloads it."""
        pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()
        path = folder / "service-account.json"
        path.write_text(json.dumps({
            "type": "service_account", "project_id": "acme-prod", "private_key_id": secrets.token_hex(20),
            "private_key": pem, "client_email": self.email, "client_id": "104857600000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": self.token_uri,
            "universe_domain": "googleapis.com",
        }))
        return path

    def add(self, name: str, mime_type: str, content=b"", *, parent: str = "root", drive: str | None = None,
            shared_with: str = "domain:acme.com") -> File:
        """A file; `shared_with` "domain:<domain>", "anyone" or "user:<email>" (besides its owner)."""
        file = File(secrets.token_urlsafe(24).replace("-", "x").replace("_", "y"), name, mime_type, parent,
                    content, drive)
        file.permissions = [{"id": "owner", "type": "user", "role": "owner", "emailAddress": "ada@acme.com"}]
        self.share(file, shared_with, bump=False)
        self.files[file.id] = file
        return file

    def share(self, file: File, shared_with: str, *, bump: bool = True) -> None:
        """Replace who besides its owner may read the file."""
        kind, _, who = shared_with.partition(":")
        grant = {"id": secrets.token_hex(8), "type": kind, "role": "reader"}
        if kind == "domain":
            grant["domain"] = who
        elif kind == "user":
            grant["emailAddress"] = who
        file.permissions = [file.permissions[0], grant]
        if bump:
            file.version += 1

    def edit(self, file: File, content) -> None:
        file.content = content
        file.version += 1
        file.modified = _now()

    def remove(self, file: File) -> None:
        file.trashed = True
        file.version += 1

    def calls_to(self, fragment: str) -> int:
        with self._lock:
            return sum(1 for path, _ in self.calls if fragment in path)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ OAuth 2.0

    def _token(self, path: str, body: str):
        if urlsplit(path).path != "/token":
            return 404, {"error": "not_found"}
        form = {k: v[-1] for k, v in parse_qs(body).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}
        try:
            head, payload, signature = form.get("assertion", "").split(".")
            self._key.public_key().verify(_unb64(signature), f"{head}.{payload}".encode(), padding.PKCS1v15(),
                                          hashes.SHA256())
            header, claims = json.loads(_unb64(head)), json.loads(_unb64(payload))
        except (ValueError, InvalidSignature):
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        if self.revoked:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        if header.get("alg") != "RS256" or claims.get("iss") != self.email or claims.get("aud") != AUDIENCE:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT: iss or aud claim"}
        if not claims.get("iat", 0) - 300 <= time.time() <= claims.get("exp", 0):
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT: Token must be a short-lived token"}
        if not READ_SCOPES & set(str(claims.get("scope", "")).split()):
            return 400, {"error": "invalid_scope", "error_description": "No Drive scope"}
        token = "ya29." + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens.add(token)
        return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    # ------------------------------------------------------------------ Drive API v3

    def _api(self, raw: str, authorization: str):
        with self._lock:
            authorized = authorization.removeprefix("Bearer ") in self._tokens
        if not authorized:
            return _error(401, "authError", "Request had invalid authentication credentials. Expected OAuth 2 "
                          "access token, login cookie or other valid authentication credential.", "UNAUTHENTICATED")
        if self.budget is not None:
            if self.budget <= 0:
                return _error(403, "userRateLimitExceeded", "User rate limit exceeded.", "PERMISSION_DENIED")
            self.budget -= 1
        url = urlsplit(raw)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = url.path.removeprefix("/drive/v3/").strip("/").split("/")
        if url.path == "/drive/v3/files":
            return self._list_files(query)
        file = self.files.get(parts[1]) if parts[0] == "files" and len(parts) >= 2 else None
        # files.export has no supportsAllDrives parameter; get and permissions.list need it for a shared drive.
        if file is None or file.trashed or (file.drive and parts[2:] != ["export"]
                                            and query.get("supportsAllDrives") != "true"):
            return _error(404, "notFound", f"File not found: {parts[1] if len(parts) > 1 else ''}.", "NOT_FOUND")
        if len(parts) == 2 and query.get("alt") == "media":
            if file.mime_type in EXPORTS or file.mime_type == FOLDER:
                return _error(403, "fileNotDownloadable", "Only files with binary content can be downloaded. "
                              "Use Export with Docs Editors files.", "PERMISSION_DENIED")
            return 200, file.content, {"Content-Type": file.mime_type}
        if parts[2:] == ["export"]:
            return self._export(file, query.get("mimeType", ""))
        if parts[2:] == ["permissions"]:
            return self._paged(query, file.permissions, "permissions", ("kind", "drive#permissionList"))
        return _error(404, "notFound", "Not Found", "NOT_FOUND")

    def _list_files(self, query: dict):
        match = _QUERY.match(query.get("q", ""))
        if not match:
            return _error(400, "invalidQuery", "Invalid Value", "INVALID_ARGUMENT", location="q")
        if query.get("corpora") == "drive" and not query.get("driveId"):
            return _error(400, "badRequest", "The driveId parameter must be specified if and only if corpora is "
                          "set to drive.", "INVALID_ARGUMENT")
        all_drives = query.get("supportsAllDrives") == "true" and query.get("includeItemsFromAllDrives") == "true"
        if query.get("driveId") and not all_drives:
            return _error(403, "teamDriveInclusionNotSupported", "includeItemsFromAllDrives must be true with "
                          "driveId.", "PERMISSION_DENIED")
        found = [f for f in self.files.values() if f.parent == match.group(1) and not f.trashed
                 and (f.drive is None or (all_drives and query.get("driveId") in (None, f.drive)))]
        found.sort(key=lambda f: f.name)
        return self._paged(query, [self._file_json(f) for f in found], "files", ("kind", "drive#fileList"))

    def _paged(self, query: dict, items: list, key: str, kind: tuple[str, str]):
        try:
            size = int(query.get("pageSize", 100))
        except ValueError:
            size = 0
        if size < 1:
            return _error(400, "invalid", "Invalid value for pageSize", "INVALID_ARGUMENT", location="pageSize")
        size = min(size, 1000 if key == "files" else 100)  # larger values are coerced
        start = 0
        if "pageToken" in query:
            if query["pageToken"] not in self._page_tokens:
                return _error(400, "invalid", "Invalid Value", "INVALID_ARGUMENT", location="pageToken")
            start = self._page_tokens[query["pageToken"]]
        size = min(size, self.page_size)
        answer = {kind[0]: kind[1], key: items[start : start + size]}
        if start + size < len(items):
            token = secrets.token_urlsafe(16)
            self._page_tokens[token] = start + size
            answer["nextPageToken"] = token
        return 200, _fields(answer, query.get("fields"), key)

    def _file_json(self, file: File) -> dict:
        item = {"kind": "drive#file", "id": file.id, "name": file.name, "mimeType": file.mime_type,
                "parents": [file.parent], "version": str(file.version), "modifiedTime": file.modified,
                "webViewLink": file.web_link(), "trashed": file.trashed}
        if file.drive:
            item["driveId"] = file.drive
        if isinstance(file.content, bytes) and file.mime_type not in EXPORTS and file.mime_type != FOLDER:
            item["size"] = str(len(file.content))
        return item

    def _export(self, file: File, mime_type: str):
        if file.mime_type not in EXPORTS:
            return _error(403, "fileNotExportable", "Export only supports Docs Editors files.", "PERMISSION_DENIED")
        if mime_type not in EXPORTS[file.mime_type]:
            return _error(400, "badRequest", "The requested conversion is not supported.", "INVALID_ARGUMENT")
        data = _exported(file, mime_type)
        if len(data) > EXPORT_LIMIT:
            return _error(403, "exportSizeLimitExceeded", "This file is too large to be exported.", "PERMISSION_DENIED")
        return 200, data, {"Content-Type": mime_type}


def _exported(file: File, mime_type: str) -> bytes:
    if file.mime_type == SHEET:
        tabs = file.content
        if mime_type == "text/csv":  # the first sheet only, as Drive does
            return "\n".join(",".join(row) for row in next(iter(tabs.values()))).encode()
        buffer = io.BytesIO()  # application/zip: one HTML file per sheet
        with zipfile.ZipFile(buffer, "w") as archive:
            for tab, rows in tabs.items():
                cells = "".join("<tr>" + "".join(f"<td class='s0'>{escape(c)}</td>" for c in row) + "</tr>"
                                for row in rows)
                archive.writestr(f"{tab}.html", f"<html><head><meta charset='utf-8'><link href='resources/sheet.css' "
                                 f"rel='stylesheet'></head><body><div class='ritz grid-container'><table class='waffle'"
                                 f"><tbody>{cells}</tbody></table></div></body></html>")
            archive.writestr("resources/sheet.css", ".waffle{border:0}")
        return buffer.getvalue()
    if file.mime_type == DOC and mime_type == "text/html":
        return (f"<html><head><meta content='text/html; charset=UTF-8' http-equiv='content-type'><style "
                f"type='text/css'>.c1{{font-weight:700}}</style><title>{escape(file.name)}</title></head>"
                f"<body class='c5 doc-content'>{file.content.decode()}</body></html>").encode()
    if isinstance(file.content, bytes):
        return file.content
    return b""


def _fields(answer: dict, fields: str | None, key: str) -> dict:
    """Keep what `fields` asks for: `nextPageToken, files(id,name,…)`; everything when absent."""
    if not fields:
        return answer
    top, inner = set(), None
    for match in re.finditer(r"(\w+)(?:\(([^)]*)\))?", fields):
        top.add(match.group(1))
        if match.group(1) == key and match.group(2) is not None:
            inner = {f.strip() for f in match.group(2).split(",")}
    kept = {k: v for k, v in answer.items() if k in top}
    if key in kept and inner is not None:
        kept[key] = [{k: v for k, v in item.items() if k in inner} for item in kept[key]]
    return kept


def _error(status: int, reason: str, message: str, state: str, location: str | None = None):
    detail = {"domain": "global", "reason": reason, "message": message}
    if location:
        detail |= {"location": location, "locationType": "parameter"}
    return status, {"error": {"code": status, "message": message, "errors": [detail], "status": state}}


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
