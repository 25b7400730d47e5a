"""A local Microsoft Graph: the endpoints this plugin, its demo and BotCity's Outlook,
OneDrive and Excel plugins use, answering with the shapes Microsoft Graph returns.

- users: ``/me``, ``/users/{id}``;
- mail: ``POST /me/sendMail`` (a message to the sandbox user lands in its inbox),
  ``GET /me/mailFolders/{folder}/messages`` and ``GET /me/messages`` (every folder) with
  ``$filter`` on the subject;
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


_FILTER = re.compile(r"\s*(?:subject eq '(?P<eq>(?:[^']|'')*)'|contains\(subject,\s*"
                     r"'(?P<has>(?:[^']|'')*)'\))\s*")


class GraphService(Service):
    name = "graph"

    def __init__(self, log: RequestLog, tls: Any, tenant: Tenant) -> None:
        self.tenant = tenant
        self.drive_id = "b!" + uuid.uuid4().hex
        self.items: dict[str, Item] = {"root": Item("root", "root", None)}
        self.messages: list[dict[str, Any]] = []
        #: item id -> sheet name -> rows of cell values
        self.workbooks: dict[str, dict[str, list[list[Any]]]] = {}
        self._ids = itertools.count(1)
        #: access token -> the claims its challenge asks for (:meth:`challenge_issued`)
        self._challenged: dict[str, str] = {}
        self._lock = threading.RLock()
        super().__init__(log, tls)

    def routes(self) -> list[tuple[str, str, Route]]:
        drive = r"/v1\.0/(?:me/drive|drives/[^/]+)"
        item = rf"{drive}/items/(?P<item_id>[^/:]+)"
        book = rf"{item}/workbook"
        return [
            ("GET", r"/v1\.0/me", self._me),
            ("GET", r"/v1\.0/users/(?P<user_id>[^/]+)", self._user),
            ("POST", r"/v1\.0/me/sendMail", self._send_mail),
            ("GET", r"/v1\.0/me/mailFolders/(?P<folder>[^/]+)/messages", self._list_mail),
            ("GET", r"/v1\.0/me/messages", lambda request: self._list_mail(request, None)),
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
        """The messages in ``folder`` ("inbox" or "sentitems"), oldest first."""
        with self._lock:
            return [dict(m) for m in self.messages if m["parentFolderId"] == folder.lower()]

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
        with self._lock:
            for folder in folders:
                self.messages.append({
                    "id": f"AAMk{next(self._ids):08d}", "createdDateTime": _now(),
                    "receivedDateTime": _now(), "sentDateTime": _now(),
                    "subject": message.get("subject", ""), "bodyPreview": "",
                    "body": message.get("body", {"contentType": "text", "content": ""}),
                    "importance": "normal", "isRead": folder == "sentitems",
                    "isDraft": False, "hasAttachments": False,
                    "conversationId": str(uuid.uuid4()), "parentFolderId": folder,
                    "categories": [],
                    "from": {"emailAddress": {"name": user.name, "address": user.upn}},
                    "sender": {"emailAddress": {"name": user.name, "address": user.upn}},
                    "toRecipients": message.get("toRecipients", []),
                    "ccRecipients": message.get("ccRecipients", []),
                    "bccRecipients": [], "replyTo": [],
                    "flag": {"flagStatus": "notFlagged"},
                })
        return Reply(202)

    def _list_mail(self, request: Request, folder: str | None) -> Reply:
        """The messages of ``folder``; None: of every folder (``/me/messages``)."""
        token = self._token(request, "Mail.Read", "Mail.ReadWrite")
        if isinstance(token, Reply):
            return token
        wanted = request.query.get("$filter", "")
        match = _FILTER.fullmatch(wanted) if wanted else None
        if wanted and match is None:
            return graph_error(400, "ErrorInvalidUrlQueryFilter",
                               "The sandbox understands only subject eq '...' and "
                               "contains(subject, '...').")
        with self._lock:
            found = [m for m in self.messages
                     if folder is None or m["parentFolderId"] == folder.lower()]
        if match and match.group("eq") is not None:
            found = [m for m in found if m["subject"] == match.group("eq").replace("''", "'")]
        elif match:
            needle = match.group("has").replace("''", "'").lower()
            found = [m for m in found if needle in m["subject"].lower()]
        top = int(request.query.get("$top", "10") or 10)
        return Reply.json({"value": found[:top]})

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
