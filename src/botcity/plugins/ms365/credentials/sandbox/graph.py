"""A local Microsoft Graph: just the endpoints this plugin and its demo use, answering
with the shapes Microsoft Graph returns. Access tokens are checked against the
sandbox :class:`~.identity.Tenant`: unknown or expired -> 401 InvalidAuthenticationToken."""

from __future__ import annotations

import time
from typing import Any

from ._http import Reply, Request, RequestLog, Route, Service
from .identity import AccessToken, Tenant, User


def graph_error(status: int, code: str, message: str) -> Reply:
    return Reply.json(
        {"error": {"code": code, "message": message,
                   "innerError": {"date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                  "request-id": "sandbox"}}},
        status,
    )


class GraphService(Service):
    name = "graph"

    def __init__(self, log: RequestLog, tls: Any, tenant: Tenant) -> None:
        self.tenant = tenant
        super().__init__(log, tls)

    def routes(self) -> list[tuple[str, str, Route]]:
        return [
            ("GET", r"/v1\.0/me", self._me),
            ("GET", r"/v1\.0/users/(?P<user_id>[^/]+)", self._user),
        ]

    def _authorize(self, request: Request) -> AccessToken | Reply:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
        token = self.tenant.access_token(header.removeprefix("Bearer "))
        if token is None:
            return graph_error(401, "InvalidAuthenticationToken",
                               "IDX14100: JWT is not well formed.")
        if time.time() >= token.expires_at:
            return graph_error(401, "InvalidAuthenticationToken",
                               "Lifetime validation failed, the token is expired.")
        return token

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
