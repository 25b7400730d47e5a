"""A local Microsoft Graph: the endpoints this plugin, its demo and BotCity's Outlook,
OneDrive and Excel plugins use, answering with the shapes Microsoft Graph returns.

- users: ``/me``, ``/users/{id}``;
- mail: ``POST /me/sendMail`` (a message to the sandbox user lands in its inbox), mail
  folders (well-known names, ids, child folders, new ones), their messages with ``$filter``
  (subject, sender, ``isRead``, ``hasAttachments``), a message, its attachments, ``PATCH``
  (read flag, categories, flag) and ``move``; a test puts mail in any folder with
  :meth:`GraphService.deliver_mail`;
- files: the user's drive (``/me/drive``, ``/drives/{id}``), its root and children,
  items by path, small uploads (``PUT .../{parent}:/{name}:/content``) and downloads;
- Excel: workbook sessions, worksheets and ``range(address=...)`` of workbooks that a
  test puts with :meth:`GraphService.put_workbook`.

Access tokens are checked against the sandbox :class:`~.identity.Tenant`: unknown or
expired -> 401 InvalidAuthenticationToken; a missing permission -> 403. A continuous access
evaluation token issued before a critical event (the user's sessions revoked, the password
changed, the account disabled, the Runner's address out of a location policy's range) ->
401 with Graph's claims challenge (``WWW-Authenticate: Bearer ... error="insufficient_claims",
claims="<base64>"``), as Microsoft documents it ("How to use Continuous Access Evaluation
enabled APIs in your applications"; "Claims challenges, claims requests and client
capabilities"). Every 401 carries Graph's ``WWW-Authenticate`` header; only a challenge has
``error=`` and ``claims=``.
"""

from __future__ import annotations

import base64
import itertools
import json
import mimetypes
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._http import Reply, Request, RequestLog, Route, Service
from .identity import GRAPH_APP_ID, AccessToken, Tenant, User

#: Where Graph's ``WWW-Authenticate`` sends a client for an interactive sign-in (Microsoft's
#: address, as Graph sends it; no client follows it, msal included).
AUTHORIZATION_URI = "https://login.microsoftonline.com/common/oauth2/authorize"


def graph_error(status: int, code: str, message: str, **headers: str) -> Reply:
    return Reply.json(
        {"error": {"code": code, "message": message,
                   "innerError": {"date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                  "request-id": "sandbox"}}},
        status, **headers,
    )


def bearer_header(**params: str) -> str:
    """Graph's ``WWW-Authenticate`` header value: ``Bearer realm="", authorization_uri=...,
    client_id=<Graph's app id>`` and ``params`` (``error``, ``claims``)."""
    fields = {"realm": "", "authorization_uri": AUTHORIZATION_URI, "client_id": GRAPH_APP_ID,
              **params}
    return "Bearer " + ", ".join(f'{key}="{value}"' for key, value in fields.items())


#: The claims of a critical event's challenge (``EPOCH``: the event's time).
NBF_CLAIMS = '{"access_token":{"nbf":{"essential":true, "value":"EPOCH"}}}'


def claims_challenge(event_at: float) -> str:
    """The ``claims`` of Graph's challenge after a critical event at ``event_at``: base64 of
    ``{"access_token":{"nbf":{"essential":true, "value":"<epoch>"}}}`` (a token issued
    after the event), byte for byte as Microsoft's documentation and Azure/azure-cli#23635
    quote it."""
    text = NBF_CLAIMS.replace("EPOCH", str(int(event_at)))
    return base64.b64encode(text.encode()).decode()


def unauthorized(message: str) -> Reply:
    """Graph's 401 for an access token it does not accept (no challenge: a new token, not
    new claims, is what is missing)."""
    return graph_error(401, "InvalidAuthenticationToken", message,
                       **{"WWW-Authenticate": bearer_header()})


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Item:
    """A drive item: a folder (``content`` None) or a file."""

    id: str
    name: str
    parent: str | None
    content: bytes | None = None
    created: str = field(default_factory=_now)


#: Outlook's well-known folders, by the names Graph takes for them in a URL or as a
#: ``destinationId`` (Graph's mailFolder resource type), and their display names.
WELL_KNOWN_FOLDERS = {"inbox": "Inbox", "drafts": "Drafts", "sentitems": "Sent Items",
                      "deleteditems": "Deleted Items", "junkemail": "Junk Email",
                      "archive": "Archive", "outbox": "Outbox"}
ROOT_FOLDER = "msgfolderroot"


@dataclass
class MailFolder:
    """A folder of the user's mailbox; ``parent`` is its parent's id ("" for the root)."""

    id: str
    name: str
    parent: str
    well_known: str = ""


#: The ``$filter`` clauses the sandbox understands, joined by ``and``: ``FIELD eq VALUE``
#: and ``contains(FIELD, 'text')`` / ``startswith(FIELD, 'text')``.
_FIELDS = r"subject|isRead|hasAttachments|importance|from/emailAddress/address|displayName"
_CLAUSE = re.compile(
    rf"\s*(?:(?P<field>{_FIELDS})\s+eq\s+(?P<value>'(?:[^']|'')*'|true|false)"
    rf"|(?P<fn>contains|startswith)\((?P<infield>{_FIELDS}),\s*'(?P<text>(?:[^']|'')*)'\))\s*")
_AND = re.compile(r"and\b")


def _field(item: Mapping[str, Any], name: str) -> Any:
    value: Any = item
    for part in name.split("/"):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


Test = Callable[[Mapping[str, Any]], bool]


def _equals(name: str, want: str | bool) -> Test:
    def test(item: Mapping[str, Any]) -> bool:
        value = _field(item, name)
        return (str(value or "").lower() == want if isinstance(want, str)
                else bool(value) is want)
    return test


def _text_test(name: str, needle: str, starts: bool) -> Test:
    def test(item: Mapping[str, Any]) -> bool:
        value = str(_field(item, name) or "").lower()
        return value.startswith(needle) if starts else needle in value
    return test


def odata_filter(text: str) -> Test | None:
    """A predicate for the ``$filter`` ``text`` (None: the sandbox does not understand
    it). Strings compare without regard to case, as Exchange compares them."""
    tests: list[Test] = []
    at = 0
    while True:
        clause = _CLAUSE.match(text, at)
        if clause is None:
            return None
        if clause["field"]:
            raw = clause["value"]
            tests.append(_equals(clause["field"], raw == "true" if raw in ("true", "false")
                                 else raw[1:-1].replace("''", "'").lower()))
        else:
            tests.append(_text_test(clause["infield"], clause["text"].replace(
                "''", "'").lower(), clause["fn"] == "startswith"))
        at = clause.end()
        if at == len(text):
            return lambda item: all(test(item) for test in tests)
        joined = _AND.match(text, at)
        if joined is None:
            return None
        at = joined.end()


class GraphService(Service):
    name = "graph"

    def __init__(self, log: RequestLog, tls: Any, tenant: Tenant) -> None:
        self.tenant = tenant
        self.drive_id = "b!" + uuid.uuid4().hex
        self.items: dict[str, Item] = {"root": Item("root", "root", None)}
        self.messages: list[dict[str, Any]] = []
        #: folder id -> folder; message id -> its attachments (Graph's fileAttachment JSON)
        self.mail_folders: dict[str, MailFolder] = {}
        self.attachments: dict[str, list[dict[str, Any]]] = {}
        #: item id -> sheet name -> rows of cell values
        self.workbooks: dict[str, dict[str, list[list[Any]]]] = {}
        self._ids = itertools.count(1)
        #: access token -> the claims its challenge asks for (:meth:`challenge_issued`)
        self._challenged: dict[str, str] = {}
        self._lock = threading.RLock()
        self._make_mail_folders()
        super().__init__(log, tls)

    def routes(self) -> list[tuple[str, str, Route]]:
        drive = r"/v1\.0/(?:me/drive|drives/[^/]+)"
        item = rf"{drive}/items/(?P<item_id>[^/:]+)"
        book = rf"{item}/workbook"
        return [
            ("GET", r"/v1\.0/me", self._me),
            ("GET", r"/v1\.0/users/(?P<user_id>[^/]+)", self._user),
            ("POST", r"/v1\.0/me/sendMail", self._send_mail),
            *self._mail_routes(),
            ("GET", r"/v1\.0/me/drive", self._drive),
            ("GET", rf"{drive}/root", lambda request: self._item(request, "root")),
            ("GET", rf"{drive}/root/children",
             lambda request: self._children(request, "root")),
            ("GET", rf"{drive}/root:(?P<path>/.*?):?", self._item_by_path),
            ("GET", rf"{item}/children", self._children),
            ("GET", rf"{item}/content", self._download),
            ("PUT", rf"{item}:/(?P<filename>[^/:]+):/content", self._upload),
            ("POST", rf"{book}/createSession", self._create_session),
            ("POST", rf"{book}/closeSession", lambda r, item_id: Reply(204)),
            ("GET", rf"{book}/worksheets", self._worksheets),
            ("GET", rf"{book}/worksheets(?:/|\(')(?P<sheet>[^/']+)(?:'\))?/range"
                    rf"\(address='(?P<address>[^']+)'\)", self._range),
            ("GET", rf"{item}", self._item),
        ]

    # -- test controls ----------------------------------------------------------------
    def put_workbook(self, name: str, sheets: dict[str, list[list[Any]]]) -> str:
        """Put an Excel workbook ``name`` in the root of the user's drive; return its id."""
        with self._lock:
            item = Item(f"01{next(self._ids):06d}", name, "root", b"PK\x03\x04 sandbox xlsx")
            self.items[item.id] = item
            self.workbooks[item.id] = sheets
        return item.id

    def mail(self, folder: str = "inbox") -> list[dict[str, Any]]:
        """The messages in ``folder`` (a well-known name such as "inbox", "sentitems",
        "drafts", or a folder's path: "Invoices", "Inbox/Invoices"), oldest first."""
        with self._lock:
            found = self.folder_at(folder)
            return [dict(m) for m in self.messages if m["parentFolderId"] == found.id]

    def deliver_mail(self, subject: str, body: str = "", *, folder: str = "inbox",
                     sender: str = "someone@fabrikam.com", sender_name: str = "",
                     to: Iterable[str] | None = None, html: bool = False,
                     attachments: Mapping[str, bytes] | None = None, is_read: bool = False,
                     importance: str = "normal") -> str:
        """Put a message in the user's mailbox, as if ``sender`` had sent it: in
        ``folder`` (see :meth:`mail`; a folder path that does not exist is made), to
        ``to`` (default: the user), with ``body`` (text, or HTML with ``html``), files
        ``attachments`` (name -> content) and the read flag ``is_read``; returns its id."""
        user = self.tenant.user
        with self._lock:
            target = self.folder_at(folder, create=True)
            message = self._new_message(target.id, subject, {
                "contentType": "html" if html else "text", "content": body},
                {"emailAddress": {"name": sender_name or sender.split("@")[0],
                                  "address": sender}},
                [{"emailAddress": {"name": address, "address": address}}
                 for address in (to or [user.upn])], is_read=is_read, importance=importance)
            self._keep_attachments(message, [
                {"name": name, "contentBytes": base64.b64encode(data).decode()}
                for name, data in (attachments or {}).items()])
            return str(message["id"])

    def folder_at(self, path: str, *, create: bool = False) -> MailFolder:
        """The folder at ``path``: a well-known name ("inbox", "sentitems", ...), a folder
        id, or display names from the top ("Invoices", "Inbox/Invoices"; any case). With
        ``create``, the folders that do not exist are made; else a ValueError names the
        folders there are."""
        with self._lock:
            known = self._folder(path)
            if known is not None:
                return known
            current = self.mail_folders[ROOT_FOLDER]
            for index, part in enumerate(p for p in path.replace("\\", "/").split("/") if p):
                child = (self._folder(part) if index == 0 and part.lower() in
                         WELL_KNOWN_FOLDERS else None) or next(
                    (f for f in self.mail_folders.values()
                     if f.parent == current.id and f.name.lower() == part.lower()), None)
                if child is None:
                    if not create:
                        names = sorted(f.name for f in self.mail_folders.values()
                                       if f.parent == current.id)
                        raise ValueError(f"the sandbox mailbox has no folder {path!r} (in "
                                         f"{current.name or 'the mailbox'}: "
                                         f"{', '.join(names) or 'none'})")
                    child = self._add_folder(part, current.id)
                current = child
            return current

    def _walk(self, path: str, *, create: bool = False) -> Item | None:
        """The item at ``path`` ("/Reports/a.txt"); with ``create``, the folders on the way
        are made and the last part is returned as a (new, empty) file."""
        parts = [p for p in path.replace("\\", "/").strip("/").split("/") if p]
        if not parts:
            raise ValueError("a drive path names a file, e.g. '/Reports/report.txt'")
        current = self.items["root"]
        for index, part in enumerate(parts):
            child = next((i for i in self.items.values()
                          if i.parent == current.id and i.name == part), None)
            if child is None:
                if not create:
                    return None
                last = index == len(parts) - 1
                child = Item(f"01{next(self._ids):06d}", part, current.id,
                             b"" if last else None)
                self.items[child.id] = child
            current = child
        return current

    def drive_file(self, path: str) -> bytes | None:
        """The content of the file at ``path`` in the user's OneDrive (None: no such file)."""
        with self._lock:
            item = self._walk(path)
            return None if item is None or item.content is None else bytes(item.content)

    def put_drive_file(self, path: str, data: bytes) -> None:
        """Put a file at ``path`` in the user's OneDrive, making its folders."""
        with self._lock:
            item = self._walk(path, create=True)
            assert item is not None
            if item.content is None:
                raise ValueError(f"{path!r} is a folder in the sandbox drive")
            item.content = bytes(data)

    # -- helpers ----------------------------------------------------------------------
    def _token(self, request: Request, *permissions: str) -> AccessToken | Reply:
        token = self._authorize(request)
        if isinstance(token, Reply) or not permissions:
            return token
        if token.user is not None and not set(permissions) & token.permissions:
            return graph_error(403, "ErrorAccessDenied",
                               "Access is denied. Check credentials and try again.")
        return token

    def _item_json(self, item: Item) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": item.id, "name": item.name, "createdDateTime": item.created,
            "lastModifiedDateTime": item.created, "eTag": f'"{{{item.id}}},1"',
            "cTag": f'"c:{{{item.id}}},1"', "webUrl": f"{self.url}/drive/{item.name}",
            "size": len(item.content or b""),
            "createdBy": {"user": {"displayName": self.tenant.user.name}},
            "lastModifiedBy": {"user": {"displayName": self.tenant.user.name}},
            "parentReference": {"driveId": self.drive_id, "driveType": "business",
                                "id": item.parent, "path": "/drive/root:"},
        }
        if item.content is None:
            data["folder"] = {"childCount": sum(i.parent == item.id
                                                for i in self.items.values())}
            if item.id == "root":
                data["root"] = {}
        else:
            kind = mimetypes.guess_type(item.name)[0] or "application/octet-stream"
            data["file"] = {"mimeType": kind}
        return data

    def _find(self, item_id: str) -> Item | Reply:
        item = self.items.get(item_id)
        if item is None:
            return graph_error(404, "itemNotFound", "The resource could not be found.")
        return item

    # -- mail -------------------------------------------------------------------------
    def _send_mail(self, request: Request) -> Reply:
        token = self._token(request, "Mail.Send")
        if isinstance(token, Reply):
            return token
        # the action's parameters are "Message" and "SaveToSentItems" in Graph's metadata
        # (what msgraph-sdk sends) and camelCase in its docs: Graph takes either
        body = {str(k).lower(): v for k, v in (request.json() or {}).items()}
        message = body.get("message", {})
        recipients = [r.get("emailAddress", {}).get("address", "").lower()
                      for r in message.get("toRecipients", [])]
        # Graph keeps a copy in Sent Items unless saveToSentItems is false; a message to
        # the signed-in account itself also lands in its Inbox.
        folders = [] if str(body.get("savetosentitems", True)).lower() == "false" else [
            "sentitems"]
        if self.tenant.user.upn.lower() in recipients:
            folders.append("inbox")
        user = self.tenant.user
        sender = {"emailAddress": {"name": user.name, "address": user.upn}}
        with self._lock:
            for folder in folders:
                sent = self._new_message(
                    self.folder_at(folder).id, message.get("subject", ""),
                    message.get("body", {"contentType": "text", "content": ""}), sender,
                    message.get("toRecipients", []), cc=message.get("ccRecipients", []),
                    is_read=folder == "sentitems")
                self._keep_attachments(sent, message.get("attachments", []))
        return Reply(202)

    # -- mail: folders, messages, attachments ------------------------------------------
    def _mail_routes(self) -> list[tuple[str, str, Route]]:
        folders, messages = r"/v1\.0/me/mailFolders", r"/v1\.0/me/messages"
        folder = rf"{folders}/(?P<folder>[^/]+)"
        message = rf"{messages}/(?P<message_id>[^/]+)"
        return [
            ("GET", folders, self._list_folders),
            ("POST", folders, self._create_folder),
            ("GET", rf"{folder}/childFolders", self._list_folders),
            ("POST", rf"{folder}/childFolders", self._create_folder),
            ("GET", rf"{folder}/messages", self._list_mail),
            ("GET", folder, self._get_folder),
            ("GET", messages, self._list_mail),
            ("GET", rf"{message}/attachments", self._list_attachments),
            ("POST", rf"{message}/move", self._move_message),
            ("GET", message, self._get_message),
            ("PATCH", message, self._update_message),
        ]

    def _make_mail_folders(self) -> None:
        self.mail_folders[ROOT_FOLDER] = MailFolder(ROOT_FOLDER, "", "", ROOT_FOLDER)
        for well_known, name in WELL_KNOWN_FOLDERS.items():
            self._add_folder(name, ROOT_FOLDER, well_known)

    def _add_folder(self, name: str, parent: str, well_known: str = "") -> MailFolder:
        folder = MailFolder(f"AQMkADAw{uuid.uuid4().hex}", name, parent, well_known)
        self.mail_folders[folder.id] = folder
        return folder

    def _folder(self, ref: str) -> MailFolder | None:
        """A folder by its id or well-known name (as Graph takes them in a URL)."""
        return self.mail_folders.get(ref) or next(
            (f for f in self.mail_folders.values()
             if f.well_known and f.well_known == ref.lower()), None)

    def _folder_json(self, folder: MailFolder) -> dict[str, Any]:
        inside = [m for m in self.messages if m["parentFolderId"] == folder.id]
        return {"id": folder.id, "displayName": folder.name,
                "parentFolderId": folder.parent or None,
                "childFolderCount": sum(f.parent == folder.id
                                        for f in self.mail_folders.values()),
                "unreadItemCount": sum(not m["isRead"] for m in inside),
                "totalItemCount": len(inside), "isHidden": False}

    def _new_message(self, folder_id: str, subject: str, body: dict[str, Any],
                     sender: dict[str, Any], to: list[dict[str, Any]], *,
                     cc: list[dict[str, Any]] | None = None, is_read: bool = False,
                     importance: str = "normal") -> dict[str, Any]:
        now = _now()
        text = re.sub(r"<[^>]+>", " ", str(body.get("content", "")))
        message = {
            "id": f"AAMkAGI2{next(self._ids):08d}{uuid.uuid4().hex[:8]}",
            "createdDateTime": now, "lastModifiedDateTime": now, "receivedDateTime": now,
            "sentDateTime": now, "subject": subject,
            "bodyPreview": " ".join(text.split())[:255], "body": body,
            "importance": importance, "isRead": is_read, "isDraft": False,
            "hasAttachments": False, "conversationId": str(uuid.uuid4()),
            "parentFolderId": folder_id, "categories": [], "from": sender,
            "sender": sender, "toRecipients": to, "ccRecipients": cc or [],
            "bccRecipients": [], "replyTo": [], "flag": {"flagStatus": "notFlagged"},
            "inferenceClassification": "focused",
        }
        self.messages.append(message)
        return message

    def _keep_attachments(self, message: dict[str, Any],
                          files: list[dict[str, Any]]) -> None:
        """Keep ``files`` (Graph's fileAttachment JSON, ``name`` and ``contentBytes``) as
        the attachments of ``message``."""
        kept = []
        for item in files:
            content = base64.b64decode(item.get("contentBytes") or "")
            name = str(item.get("name") or "attachment")
            kept.append({
                "@odata.type": "#microsoft.graph.fileAttachment",
                "id": f"AAMkAGI2att{next(self._ids):08d}", "name": name,
                "contentType": item.get("contentType") or mimetypes.guess_type(name)[0]
                or "application/octet-stream", "size": len(content), "isInline": False,
                "lastModifiedDateTime": _now(),
                "contentBytes": base64.b64encode(content).decode()})
        self.attachments[message["id"]] = kept
        message["hasAttachments"] = bool(kept)

    def _find_message(self, message_id: str) -> dict[str, Any] | Reply:
        found = next((m for m in self.messages if m["id"] == message_id), None)
        if found is None:
            return graph_error(404, "ErrorItemNotFound",
                               "The specified object was not found in the store.")
        return found

    def _filtered(self, request: Request, items: list[dict[str, Any]]
                  ) -> list[dict[str, Any]] | Reply:
        wanted = request.query.get("$filter", "")
        if not wanted:
            return items
        test = odata_filter(wanted)
        if test is None:
            return graph_error(400, "ErrorInvalidUrlQueryFilter",
                               "The sandbox understands FIELD eq VALUE, contains(FIELD, "
                               "'...') and startswith(FIELD, '...') joined by and, on "
                               "subject, isRead, hasAttachments, importance, "
                               "from/emailAddress/address and displayName.")
        return [item for item in items if test(item)]

    @staticmethod
    def _top(request: Request, default: int = 10) -> int:
        try:
            return max(1, int(request.query.get("$top") or default))
        except ValueError:
            return default

    def _list_folders(self, request: Request, folder: str = ROOT_FOLDER) -> Reply:
        token = self._token(request, "Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite")
        if isinstance(token, Reply):
            return token
        with self._lock:
            parent = self._folder(folder)
            if parent is None:
                return graph_error(404, "ErrorItemNotFound",
                                   "The specified folder could not be found in the store.")
            found = [self._folder_json(f) for f in self.mail_folders.values()
                     if f.parent == parent.id]
        chosen = self._filtered(request, found)
        if isinstance(chosen, Reply):
            return chosen
        return Reply.json({"value": chosen[:self._top(request)]})

    def _create_folder(self, request: Request, folder: str = ROOT_FOLDER) -> Reply:
        token = self._token(request, "Mail.ReadWrite")
        if isinstance(token, Reply):
            return token
        name = str((request.json() or {}).get("displayName") or "").strip()
        with self._lock:
            parent = self._folder(folder)
            if parent is None or not name:
                return graph_error(400, "ErrorInvalidRequest", "The request is invalid.")
            if any(f.parent == parent.id and f.name.lower() == name.lower()
                   for f in self.mail_folders.values()):
                return graph_error(409, "ErrorFolderExists",
                                   "A folder with the specified name already exists.")
            return Reply.json(self._folder_json(self._add_folder(name, parent.id)), 201)

    def _get_folder(self, request: Request, folder: str) -> Reply:
        token = self._token(request, "Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite")
        if isinstance(token, Reply):
            return token
        with self._lock:
            found = self._folder(folder)
            if found is None:
                return graph_error(404, "ErrorItemNotFound",
                                   "The specified folder could not be found in the store.")
            return Reply.json(self._folder_json(found))

    def _list_mail(self, request: Request, folder: str | None = None) -> Reply:
        token = self._token(request, "Mail.Read", "Mail.ReadWrite")
        if isinstance(token, Reply):
            return token
        with self._lock:
            where = self._folder(folder) if folder is not None else None
            if folder is not None and where is None:
                return graph_error(404, "ErrorItemNotFound",
                                   "The specified folder could not be found in the store.")
            found = [dict(m) for m in self.messages
                     if where is None or m["parentFolderId"] == where.id]
        chosen = self._filtered(request, found)
        if isinstance(chosen, Reply):
            return chosen
        return Reply.json({"value": chosen[:self._top(request)]})

    def _get_message(self, request: Request, message_id: str) -> Reply:
        token = self._token(request, "Mail.Read", "Mail.ReadWrite")
        if isinstance(token, Reply):
            return token
        with self._lock:
            found = self._find_message(message_id)
            return found if isinstance(found, Reply) else Reply.json(dict(found))

    def _update_message(self, request: Request, message_id: str) -> Reply:
        """Graph's message update: the read flag, categories, flag and importance."""
        token = self._token(request, "Mail.ReadWrite")
        if isinstance(token, Reply):
            return token
        changes = request.json() or {}
        with self._lock:
            found = self._find_message(message_id)
            if isinstance(found, Reply):
                return found
            for name in ("isRead", "categories", "flag", "importance"):
                if name in changes:
                    found[name] = changes[name]
            found["lastModifiedDateTime"] = _now()
            return Reply.json(dict(found))

    def _move_message(self, request: Request, message_id: str) -> Reply:
        """Graph's move: a copy in the destination folder (a folder id or a well-known
        name), with a new id, and the original removed; 201 with the copy."""
        token = self._token(request, "Mail.ReadWrite")
        if isinstance(token, Reply):
            return token
        destination = str((request.json() or {}).get("destinationId") or "")
        with self._lock:
            found = self._find_message(message_id)
            if isinstance(found, Reply):
                return found
            target = self._folder(destination)
            if target is None:
                return graph_error(400, "ErrorInvalidIdMalformed", "Id is malformed.")
            moved = {**found, "id": f"AAMkAGI2{next(self._ids):08d}{uuid.uuid4().hex[:8]}",
                     "parentFolderId": target.id, "lastModifiedDateTime": _now()}
            self.messages[self.messages.index(found)] = moved
            self.attachments[moved["id"]] = self.attachments.pop(message_id, [])
            return Reply.json(dict(moved), 201)

    def _list_attachments(self, request: Request, message_id: str) -> Reply:
        token = self._token(request, "Mail.Read", "Mail.ReadWrite")
        if isinstance(token, Reply):
            return token
        with self._lock:
            found = self._find_message(message_id)
            if isinstance(found, Reply):
                return found
            return Reply.json({"value": [dict(a) for a in self.attachments.get(
                message_id, [])]})

    # -- files ------------------------------------------------------------------------
    def _drive(self, request: Request) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        user = self.tenant.user
        return Reply.json({"id": self.drive_id, "driveType": "business", "name": "OneDrive",
                           "owner": {"user": {"displayName": user.name, "id": user.oid}},
                           "quota": {"total": 1 << 40, "used": 0, "remaining": 1 << 40,
                                     "deleted": 0, "state": "normal"},
                           "webUrl": f"{self.url}/drive", "createdDateTime": _now(),
                           "lastModifiedDateTime": _now()})

    def _item(self, request: Request, item_id: str) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        item = self._find(item_id)
        return item if isinstance(item, Reply) else Reply.json(self._item_json(item))

    def _item_by_path(self, request: Request, path: str) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        with self._lock:
            found = self._walk(path) if path.strip("/") else self.items["root"]
        if found is None:
            return graph_error(404, "itemNotFound", "The resource could not be found.")
        return Reply.json(self._item_json(found))

    def _children(self, request: Request, item_id: str) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        with self._lock:
            found = [self._item_json(i) for i in self.items.values() if i.parent == item_id]
        return Reply.json({"value": found})

    def _upload(self, request: Request, item_id: str, filename: str) -> Reply:
        token = self._token(request, "Files.ReadWrite", "Files.ReadWrite.All")
        if isinstance(token, Reply):
            return token
        with self._lock:
            existing = next((i for i in self.items.values()
                             if i.parent == item_id and i.name == filename), None)
            item = existing or Item(f"01{next(self._ids):06d}", filename, item_id)
            item.content = request.body
            self.items[item.id] = item
        return Reply.json(self._item_json(item), 200 if existing else 201)

    def _download(self, request: Request, item_id: str) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        item = self._find(item_id)
        if isinstance(item, Reply):
            return item
        return Reply(200, item.content or b"", {"Content-Type": "application/octet-stream"})

    # -- Excel ------------------------------------------------------------------------
    def _create_session(self, request: Request, item_id: str) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        if item_id not in self.workbooks:
            return graph_error(404, "itemNotFound", "The workbook could not be found.")
        return Reply.json({"id": uuid.uuid4().hex, "persistChanges": True}, 201)

    def _worksheets(self, request: Request, item_id: str) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        sheets = self.workbooks.get(item_id)
        if sheets is None:
            return graph_error(404, "itemNotFound", "The workbook could not be found.")
        return Reply.json({"value": [
            {"id": f"{{{uuid.uuid5(uuid.NAMESPACE_URL, name)}}}", "name": name,
             "position": n, "visibility": "Visible"} for n, name in enumerate(sheets)]})

    def _range(self, request: Request, item_id: str, sheet: str, address: str) -> Reply:
        token = self._token(request)
        if isinstance(token, Reply):
            return token
        sheets = self.workbooks.get(item_id, {})
        name = next((n for n in sheets if sheet in (
            n, f"{{{uuid.uuid5(uuid.NAMESPACE_URL, n)}}}")), None)
        if name is None:
            return graph_error(404, "ItemNotFound", "The requested resource doesn't exist.")
        cells = re.fullmatch(r"([A-Z]+)(\d+)(?::([A-Z]+)(\d+))?", address.split("!")[-1])
        if cells is None:
            return graph_error(400, "InvalidArgument", "The argument is invalid.")

        def column(letters: str) -> int:
            number = 0
            for letter in letters:
                number = number * 26 + ord(letter) - 64
            return number - 1

        first_col, first_row = column(cells.group(1)), int(cells.group(2)) - 1
        last_col = column(cells.group(3) or cells.group(1))
        last_row = int(cells.group(4) or cells.group(2)) - 1
        grid = sheets[name]
        values = [[grid[r][c] if r < len(grid) and c < len(grid[r]) else ""
                   for c in range(first_col, last_col + 1)]
                  for r in range(first_row, last_row + 1)]
        return Reply.json({
            "address": f"{name}!{address}", "addressLocal": f"{name}!{address}",
            "cellCount": len(values) * len(values[0]), "columnCount": len(values[0]),
            "rowCount": len(values), "columnIndex": first_col, "rowIndex": first_row,
            "columnHidden": False, "rowHidden": False, "hidden": False,
            "values": values, "text": [[str(v) for v in row] for row in values],
            "formulas": values, "formulasLocal": values, "formulasR1C1": values,
            "numberFormat": [["General"] * len(values[0]) for _ in values],
            "valueTypes": [["String" if isinstance(v, str) else "Double" for v in row]
                           for row in values],
        })

    def _authorize(self, request: Request) -> AccessToken | Reply:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return unauthorized("Access token is empty.")
        token = self.tenant.access_token(header.removeprefix("Bearer "))
        if token is None:
            return unauthorized("IDX14100: JWT is not well formed.")
        if time.time() >= token.expires_at:
            return unauthorized("Lifetime validation failed, the token is expired.")
        refused = self.tenant.cae_refusal(token)
        if refused is not None:
            code, event_at = refused
            # Graph's words, as users quote them (microsoftgraph/msgraph-sdk-powershell#1741,
            # Azure/azure-cli#24684)
            return graph_error(
                401, "InvalidAuthenticationToken", "Continuous access evaluation resulted in "
                f"claims challenge with result: InteractionRequired and code: {code}",
                **{"WWW-Authenticate": bearer_header(error="insufficient_claims",
                                                     claims=claims_challenge(event_at))})
        challenge = self._challenge(header.removeprefix("Bearer "))
        return challenge or token

    def _me(self, request: Request) -> Reply:
        token = self._authorize(request)
        if isinstance(token, Reply):
            return token
        if token.user is None:
            return graph_error(400, "BadRequest", "/me request is only valid with delegated "
                               "authentication flow.")
        return self._user_json(token.user)

    def _user(self, request: Request, user_id: str) -> Reply:
        """A user by id or principal name; app-only and delegated tokens both may ask."""
        token = self._authorize(request)
        if isinstance(token, Reply):
            return token
        user = self.tenant.user
        if user_id.lower() not in (user.upn.lower(), user.oid):
            return graph_error(404, "Request_ResourceNotFound",
                               f"Resource '{user_id}' does not exist.")
        return self._user_json(user)

    @staticmethod
    def _user_json(user: User) -> Reply:
        return Reply.json({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
            "businessPhones": [], "displayName": user.name, "givenName": "Bot",
            "jobTitle": None, "mail": user.upn, "mobilePhone": None, "officeLocation": None,
            "preferredLanguage": "en-US", "surname": "User",
            "userPrincipalName": user.upn, "id": user.oid,
        })

    # -- test-only: a claims challenge ----------------------------------------------------
    # A minimal control for the Graph SDK's tests (tests/test_graph_sdk.py): Graph refuses
    # the access tokens issued so far with continuous access evaluation's challenge, as
    # after a critical event. Separate from the rest so that a fuller model of CAE can
    # replace it.
    def challenge_issued(self, claims: str | None = None) -> str:
        """From now on, every access token issued so far is answered 401 with a claims
        challenge (``WWW-Authenticate: Bearer ..., error="insufficient_claims",
        claims="<base64>"``); tokens issued later are not. ``claims`` (JSON) defaults to
        what Graph asks after a critical event: a token issued from now on
        (``{"access_token":{"nbf":{"essential":true,"value":"<now>"}}}``, Microsoft: "How
        to use Continuous Access Evaluation enabled APIs in your applications"). Returns
        the claims."""
        if claims is None:
            claims = json.dumps({"access_token": {"nbf": {"essential": True,
                                                          "value": str(int(time.time()))}}},
                                separators=(",", ":"))
        with self.tenant.lock:
            issued = set(self.tenant.access_tokens)
        with self._lock:
            self._challenged.update(dict.fromkeys(issued, claims))
        return claims

    def _challenge(self, secret: str) -> Reply | None:
        with self._lock:
            claims = self._challenged.get(secret)
        if claims is None:
            return None
        encoded = base64.b64encode(claims.encode("utf-8")).decode("ascii")
        return graph_error(401, "InvalidAuthenticationToken",
                           "Continuous access evaluation resulted in challenge with result: "
                           "InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp",
                           **{"WWW-Authenticate": bearer_header(error="insufficient_claims",
                                                                claims=encoded)})
