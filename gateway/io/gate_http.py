"""HTTP gate mode: one GET of `[gate].http_url` per open command (interfaces.md §4.3).

Credentials in the URL move to a Basic `Authorization` header, as curl does; the request goes
through one reused httpx client, bounded as a whole by `[gate].timeout_ms`, single attempt.
"""

from __future__ import annotations

import base64
import urllib.parse
from types import TracebackType

import attrs
import httpx
import trio

from gateway.config.model import GateConfig

# The reference shelled out to curl; some controllers' CGIs check these (interfaces.md §4.3).
USER_AGENT = "curl/7.88.1"
ACCEPT = "*/*"


class HttpGateError(Exception):
    """Timeout or transport failure (reason `http_error`); a status reply is not an error here."""


@attrs.frozen
class GateRequest:
    """The URL actually requested and the headers that go with it."""

    url: str
    headers: dict[str, str]


def build_request(http_url: str) -> GateRequest:
    """Move `user:pass@` out of the URL into `Authorization: Basic …` (interfaces.md §4.3)."""
    parts = urllib.parse.urlsplit(http_url)
    headers = {"Accept": ACCEPT, "User-Agent": USER_AGENT}
    if parts.username is None and parts.password is None:
        return GateRequest(url=http_url, headers=headers)
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    headers["Authorization"] = f"Basic {token}"
    host = parts.netloc.rpartition("@")[2]
    url = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return GateRequest(url=url, headers=headers)


class HttpGate:
    """Owns the reused httpx client; use as `async with HttpGate(config) as gate`."""

    def __init__(self, config: GateConfig, *, transport: httpx.AsyncBaseTransport | None = None):
        self._request = build_request(config.http_url)
        self._timeout_s = config.timeout_ms / 1000
        # httpx's own timeouts stay as a backstop; the trio deadline bounds the whole request.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout_s),
            follow_redirects=False,
            transport=transport,
        )

    @property
    def url(self) -> str:
        return self._request.url

    async def request(self) -> int:
        """GET the gate URL once; return the HTTP status. Raises HttpGateError."""
        try:
            with trio.fail_after(self._timeout_s):
                response = await self._client.get(self._request.url, headers=self._request.headers)
        except trio.TooSlowError:
            raise HttpGateError(f"no response within {self._timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise HttpGateError(f"{type(exc).__name__}: {exc}") from exc
        return response.status_code

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> HttpGate:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with trio.move_on_after(1.0) as cleanup:
            cleanup.shield = True
            await self.aclose()
