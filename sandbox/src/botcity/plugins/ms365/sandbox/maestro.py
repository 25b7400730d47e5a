"""A local BotCity Maestro (API v2) that answers as botcity-maestro-sdk 0.9.1 expects.

Workspace login, credentials (read by label and by key, create, add key, edit), alerts,
tasks (create, read, finish), errors and logs: what a Runner bot made from BotCity's
template calls. Every call but ``version`` and ``login`` needs the
``token`` header of a login or of a task started with :meth:`MaestroService.start_task`
(the Runner's token); otherwise 401.

A real Maestro is farther and slower than this one. Settings (attributes, changeable at
any moment) make it less instant: :attr:`~MaestroService.read_latency` and
:attr:`~MaestroService.write_latency` (a ``(low, high)`` range of seconds drawn for each
request, waited before the request is handled: a write takes effect late),
:attr:`~MaestroService.visibility_delay` (a credential write is answered at once but
reads return the old value for that many seconds) and
:attr:`~MaestroService.token_lifetime` (login and Runner tokens are refused with 401 that
many seconds after they were issued).
"""

from __future__ import annotations

import copy
import itertools
import random
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ._http import Reply, Request, RequestLog, Route, Service


@dataclass
class Task:
    id: int
    activity_label: str
    parameters: dict[str, Any]
    state: str = "START"
    finish_status: str | None = None
    finish_message: str | None = None
    items: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "state": self.state, "parameters": self.parameters,
            "activityLabel": self.activity_label, "finishStatus": self.finish_status,
            "finishMessage": self.finish_message, "test": False, "interrupted": False,
            "killed": False, "priority": 0, "repositoryLabel": "DEFAULT", **self.items,
        }


@dataclass
class Workspace:
    """A BotCity workspace (an *organization*): its login, key and credentials."""

    login: str
    key: str = field(default_factory=lambda: "sbxkey_" + secrets.token_urlsafe(24))
    #: label -> list of {"key", "value", "valid"}, in the order they were added
    credentials: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: activity label -> {"columns": [{"name", "label", "width"}], "entries": [...]}
    logs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: other keys of this login that may read credentials but not write them (writes: 403)
    reader_keys: list[str] = field(default_factory=list)


@dataclass
class _Unseen:
    """A credential write that reads do not see yet: until ``visible_at`` they get
    ``before`` (the label's keys before it; None: the label did not exist)."""

    visible_at: float
    before: list[dict[str, Any]] | None


Range = tuple[float, float]


def _check_range(value: Range | None, name: str) -> Range | None:
    if value is None:
        return None
    low, high = (float(v) for v in value)
    if not 0 <= low <= high <= 60:
        raise ValueError(f"{name} is (low, high) with 0 <= low <= high <= 60, not {value!r}")
    return low, high


class MaestroService(Service):
    name = "maestro"

    def __init__(self, log: RequestLog, version: str = "3.5.0",
                 tls: ssl.SSLContext | None = None) -> None:
        self.version = version
        #: seconds each GET waits before it is handled, drawn in this range (None: none)
        self.read_latency: Range | None = None
        #: the same for every other request (POST, DELETE: the writes, and login); None:
        #: as :attr:`read_latency`. Waited before the write takes effect.
        self.write_latency: Range | None = None
        #: seconds a credential write (create, add key, edit) stays unseen by reads
        self.visibility_delay = 0.0
        #: seconds a login's or a Runner's token is accepted after it was issued (None:
        #: forever); then 401, as for an unknown token
        self.token_lifetime: float | None = None
        #: draws the latencies (seed it for a repeatable run)
        self.random = random.Random()
        self._unseen: dict[tuple[str, str], list[_Unseen]] = {}
        self._issued: dict[str, float] = {}  # access token -> when it was issued
        #: the workspaces this Maestro serves; the first is the default of every helper
        self.workspaces: dict[str, Workspace] = {}
        self.login = self.add_workspace("sandbox").login
        #: The status a read of a label that does not exist gets. The real server's is not
        #: documented (the SDK takes any non-2xx as "absent"): tests try 400, 404 and 500.
        self.missing_label_status = 404
        self.alerts: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.tasks: dict[int, Task] = {}
        self._tokens: dict[str, str] = {}  # access token -> workspace login
        self._readers: set[str] = set()  # access tokens of reader keys
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        super().__init__(log, tls)

    # -- realism: latency, late visibility, expiring tokens ------------------------------
    def set_latency(self, read: Range | None, write: Range | None = None) -> None:
        """Every request waits a time drawn in ``read`` (GET) or ``write`` (the others;
        default: ``read``) before it is handled. ``None``: no wait."""
        self.read_latency = _check_range(read, "read latency")
        self.write_latency = _check_range(write, "write latency")

    def latency(self, request: Request) -> float:
        span = (self.read_latency if request.method in ("GET", "HEAD")
                else self.write_latency or self.read_latency)
        if not span:
            return 0.0
        with self._lock:
            return self.random.uniform(*span)

    def _written(self, space: Workspace, label: str) -> None:
        """Call before a credential write (under the lock): remember what reads see."""
        if self.visibility_delay > 0:
            before = space.credentials.get(label)
            self._unseen.setdefault((space.login, label), []).append(
                _Unseen(time.time() + self.visibility_delay, copy.deepcopy(before)))

    def _seen(self, space: Workspace, label: str) -> list[dict[str, Any]] | None:
        """A label's keys as reads see them (under the lock): as they were before the
        oldest write not visible yet, else as they are."""
        now = time.time()
        pending = [u for u in self._unseen.get((space.login, label), []) if u.visible_at > now]
        self._unseen[(space.login, label)] = pending
        return pending[0].before if pending else space.credentials.get(label)

    def _issue(self, token: str, login: str) -> None:
        with self._lock:
            self._tokens[token] = login
            self._issued[token] = time.time()

    def expire_tokens(self) -> None:
        """Every login and Runner token issued so far is refused from now on (401)."""
        with self._lock:
            for token in self._issued:
                self._issued[token] = float("-inf")

    # -- test controls ----------------------------------------------------------------
    def add_workspace(self, login: str) -> Workspace:
        """Another workspace on this Maestro (BotCity Cloud serves many on one server)."""
        workspace = Workspace(login)
        self.workspaces[login] = workspace
        return workspace

    @property
    def key(self) -> str:
        """The default workspace's key."""
        return self.workspaces[self.login].key

    @property
    def credentials(self) -> dict[str, list[dict[str, Any]]]:
        """The default workspace's credentials (label -> keys)."""
        return self.workspaces[self.login].credentials

    def _space(self, organization: str | None) -> Workspace:
        return self.workspaces[organization or self.login]

    def start_task(self, activity_label: str = "ms365-bot",
                   parameters: dict[str, Any] | None = None,
                   organization: str | None = None) -> tuple[int, str]:
        """Create a task as Maestro does when a Runner picks it up: returns the task id and
        the access token the Runner passes to the bot on its command line."""
        with self._lock:
            task = Task(next(self._ids), activity_label, dict(parameters or {}), "RUNNING")
            self.tasks[task.id] = task
        return task.id, self.runner_token(organization)

    def reader_key(self, organization: str | None = None) -> str:
        """A new key of the workspace's login that may read credentials but not write
        them: Maestro answers 403 to its credential writes (create, add key, edit)."""
        key = "sbxreader_" + secrets.token_urlsafe(24)
        with self._lock:
            self._space(organization).reader_keys.append(key)
        return key

    def _reader_login(self, body: dict[str, Any]) -> Reply | None:
        """The login of a :meth:`reader_key` (None: the key is not one)."""
        space = self.workspaces.get(str(body.get("login", "")))
        given = str(body.get("key", ""))
        if space is None or not any(secrets.compare_digest(given, key)
                                    for key in space.reader_keys):
            return None
        token = "sbxtoken_" + secrets.token_urlsafe(24)
        self._issue(token, space.login)
        with self._lock:
            self._readers.add(token)
        return Reply.json({"accessToken": token, "login": space.login})

    def runner_token(self, organization: str | None = None) -> str:
        """A new access token of the workspace, as Maestro gives a Runner for one run."""
        token = "sbxrunner_" + secrets.token_urlsafe(24)
        self._issue(token, self._space(organization).login)
        return token

    def runner_argv(self, task_id: int, token: str) -> list[str]:
        """``<server> <task_id> <token> <organization>``, as a Runner starts a bot."""
        return [self.url, str(task_id), token, self._tokens.get(token, self.login)]

    def secret(self, label: str, key: str, organization: str | None = None) -> str | None:
        with self._lock:
            for item in self._space(organization).credentials.get(label, []):
                if item["key"] == key:
                    return str(item["value"])
        return None

    def put_secret(self, label: str, key: str, value: str,
                   organization: str | None = None) -> None:
        """Set one key as an operator would in Maestro's web page."""
        with self._lock:
            items = self._space(organization).credentials.setdefault(label, [])
            for item in items:
                if item["key"] == key:
                    item["value"] = value
                    return
            items.append({"key": key, "value": value, "valid": True})

    # -- endpoints --------------------------------------------------------------------
    def routes(self) -> list[tuple[str, str, Route]]:
        label = r"(?P<label>[^/]+)"
        activity = r"(?P<activity>[^/]+)"
        return [
            ("GET", r"/api/v2/maestro/version", self._version),
            ("POST", r"/api/v2/workspace/login", self._login),
            ("GET", rf"/api/v2/credential/{label}/key/(?P<key>[^/]+)", self._authed(self._get_key)),
            ("GET", rf"/api/v2/credential/{label}", self._authed(self._get_label)),
            ("POST", r"/api/v2/credential", self._authed(self._create)),
            ("POST", rf"/api/v2/credential/{label}/key", self._authed(self._add_key)),
            ("POST", rf"/api/v2/credential/{label}", self._authed(self._edit)),
            ("POST", r"/api/v2/alerts", self._authed(self._alert)),
            ("POST", r"/api/v2/task", self._authed(self._create_task)),
            ("GET", r"/api/v2/task/(?P<task_id>\d+)", self._authed(self._get_task)),
            ("POST", r"/api/v2/task/(?P<task_id>\d+)", self._authed(self._finish_task)),
            ("POST", r"/api/v2/error", self._authed(self._error)),
            ("POST", r"/api/v2/error/(?P<error_id>\d+)/(attachments|screenshot)",
             self._authed(lambda request, space, error_id: Reply.json({}, 200))),
            ("POST", r"/api/v2/log", self._authed(self._new_log)),
            ("POST", rf"/api/v2/log/{activity}/entry", self._authed(self._new_log_entry)),
            ("GET", rf"/api/v2/log/{activity}/entry-list", self._authed(self._log_entries)),
            ("GET", rf"/api/v2/log/{activity}", self._authed(self._get_log)),
            ("DELETE", rf"/api/v2/log/{activity}", self._authed(self._delete_log)),
        ]

    def _authed(self, function: Route) -> Route:
        """Every call but version and login: the ``token`` of a login or a Runner's task,
        and, when given, the ``organization`` it belongs to (else 401). The call works
        on that workspace's credentials only."""
        def wrapper(request: Request, **kwargs: str) -> Reply:
            token = request.headers.get("token", "")
            organization = request.headers.get("organization", "")
            with self._lock:
                login = self._tokens.get(token)
                issued = self._issued.get(token, 0.0)
            lifetime = self.token_lifetime
            if issued == float("-inf") or (
                    lifetime is not None and time.time() - issued >= lifetime):
                return Reply.json({"message": "Invalid token or organization."}, 401)
            if login is None or organization not in ("", login):
                return Reply.json({"message": "Invalid token or organization."}, 401)
            if (token in self._readers and request.method != "GET"
                    and request.path.startswith("/api/v2/credential")):
                return Reply.json({"message": "This key may not change credentials."}, 403)
            return function(request, space=self.workspaces[login], **kwargs)
        return wrapper

    def _version(self, request: Request) -> Reply:
        return Reply.json({"version": self.version})

    def _login(self, request: Request) -> Reply:
        body = request.json() or {}
        reader = self._reader_login(body)
        if reader is not None:
            return reader
        space = self.workspaces.get(str(body.get("login", "")))
        if space is None or not secrets.compare_digest(str(body.get("key", "")), space.key):
            return Reply.json({"message": "Invalid login or key."}, 401)
        token = "sbxtoken_" + secrets.token_urlsafe(24)
        self._issue(token, space.login)
        return Reply.json({"accessToken": token, "login": space.login})

    def _missing(self, label: str) -> Reply:
        return Reply.json({"message": f"Credential '{label}' not found."},
                          self.missing_label_status)

    def _get_key(self, request: Request, space: Workspace, label: str, key: str) -> Reply:
        with self._lock:
            value = next((str(i["value"]) for i in self._seen(space, label) or []
                          if i["key"] == key), None)
        if value is None:
            return Reply.json({"message": f"Key '{key}' not found in credential '{label}'."}, 404)
        return Reply.text(value)

    def _get_label(self, request: Request, space: Workspace, label: str) -> Reply:
        with self._lock:
            items = self._seen(space, label)
            if items is None:
                return self._missing(label)
            return Reply.json({"label": label, "organizationLabel": space.login,
                               "repositoryLabel": "DEFAULT",
                               "secrets": [dict(i) for i in items]})

    def _create(self, request: Request, space: Workspace) -> Reply:
        body = request.json() or {}
        label = str(body.get("label", ""))
        with self._lock:
            if not label or label in space.credentials:
                return Reply.json({"message": f"Credential '{label}' already exists."}, 400)
            self._written(space, label)
            space.credentials[label] = [
                {"key": str(s["key"]), "value": s.get("value"), "valid": s.get("valid", True)}
                for s in body.get("secrets", [])
            ]
        return Reply.json({"message": "Credential created.", "type": "success"}, 200)

    def _add_key(self, request: Request, space: Workspace, label: str) -> Reply:
        body = request.json() or {}
        with self._lock:
            items = space.credentials.get(label)
            if items is None:
                return self._missing(label)
            if any(i["key"] == body.get("key") for i in items):
                return Reply.json({"message": f"Key '{body.get('key')}' already exists."}, 400)
            self._written(space, label)
            items.append({"key": str(body.get("key")), "value": body.get("value"), "valid": True})
        return Reply.json({"message": "Key added.", "type": "success"}, 201)

    def _edit(self, request: Request, space: Workspace, label: str) -> Reply:
        body = request.json() or {}
        with self._lock:
            if label not in space.credentials:
                return self._missing(label)
            self._written(space, label)
            space.credentials[label] = [
                {"key": str(s["key"]), "value": s.get("value"), "valid": s.get("valid", True)}
                for s in body.get("secrets", [])
            ]
        return Reply.json({"message": "Credential updated.", "type": "success"}, 200)

    def _alert(self, request: Request, space: Workspace) -> Reply:
        body = request.json() or {}
        task_id = str(body.get("taskId") or "")
        with self._lock:
            self.alerts.append({**body, "organization": space.login, "at": time.time()})
            number = len(self.alerts)
        # the server answers with the alert, its taskId a number (BotCity's JS and C# SDKs)
        return Reply.json({"id": str(number), "taskId": int(task_id) if task_id.isdigit()
                           else None, "title": body.get("title"),
                           "message": body.get("message"), "type": body.get("type")}, 200)

    def _create_task(self, request: Request, space: Workspace) -> Reply:
        body = request.json() or {}
        if not body.get("activityLabel"):
            return Reply.json({"message": "activityLabel is required."}, 400)
        with self._lock:
            task = Task(next(self._ids), str(body["activityLabel"]),
                        dict(body.get("parameters") or {}))
            self.tasks[task.id] = task
        return Reply.json(task.to_json())

    def _get_task(self, request: Request, space: Workspace, task_id: str) -> Reply:
        task = self.tasks.get(int(task_id))
        if task is None:
            return Reply.json({"message": f"Task {task_id} not found."}, 404)
        return Reply.json(task.to_json())

    def _finish_task(self, request: Request, space: Workspace, task_id: str) -> Reply:
        task = self.tasks.get(int(task_id))
        if task is None:
            return Reply.json({"message": f"Task {task_id} not found."}, 404)
        body = request.json() or {}
        with self._lock:
            task.state = str(body.get("state", "FINISHED"))
            task.finish_status = body.get("finishStatus")
            task.finish_message = body.get("finishMessage")
            task.items = {k: body[k] for k in ("totalItems", "processedItems", "failedItems")
                          if k in body}
        return Reply.json({"message": "Task finished.", "type": "success"}, 200)

    def _error(self, request: Request, space: Workspace) -> Reply:
        body = request.json() or {}
        with self._lock:
            error_id = len(self.errors) + 1
            self.errors.append({**body, "id": error_id})
        return Reply.json({"id": error_id}, 201)

    # -- logs (the SDK's new_log, new_log_entry, get_log, delete_log) -------------------------
    def _new_log(self, request: Request, space: Workspace) -> Reply:
        body = request.json() or {}
        activity = str(body.get("activityLabel") or "")
        with self._lock:
            if not activity or activity in space.logs:
                return Reply.json({"message": f"Log '{activity}' already exists."}, 400)
            space.logs[activity] = {"columns": list(body.get("columns") or []), "entries": []}
        return Reply.json({"message": "Log created.", "type": "success"}, 200)

    def _new_log_entry(self, request: Request, space: Workspace, activity: str) -> Reply:
        with self._lock:
            log = space.logs.get(activity)
            if log is None:
                return Reply.json({"message": f"Log '{activity}' not found."}, 404)
            log["entries"].append({"columns": dict(request.json() or {}),
                                   "dateCreation": time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                                                 time.gmtime())})
        return Reply.text("Entry created.")

    def _get_log(self, request: Request, space: Workspace, activity: str) -> Reply:
        with self._lock:
            log = space.logs.get(activity)
            if log is None:
                return Reply.json({"message": f"Log '{activity}' not found."}, 404)
            return Reply.json({"activityLabel": activity, "organizationLabel": space.login,
                               "columns": list(log["columns"])})

    def _log_entries(self, request: Request, space: Workspace, activity: str) -> Reply:
        with self._lock:
            log = space.logs.get(activity)
            if log is None:
                return Reply.json({"message": f"Log '{activity}' not found."}, 404)
            return Reply.json([dict(e) for e in log["entries"]])

    def _delete_log(self, request: Request, space: Workspace, activity: str) -> Reply:
        with self._lock:
            if space.logs.pop(activity, None) is None:
                return Reply.json({"message": f"Log '{activity}' not found."}, 404)
        return Reply.text("Log deleted.")
