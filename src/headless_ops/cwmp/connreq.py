"""Connection requests: the ACS asks a CPE to open a session (HTTP GET, Digest auth)."""

from __future__ import annotations

import httpx2

__all__ = ["ConnectionRequester"]


class ConnectionRequester:
    """Sends connection requests through one shared HTTP client.

    One client for all CPEs: building one per request costs a TLS context each time (the
    CA bundle loaded anew), which at a thousand CPEs due together was most of the CPU.
    Keep-alive is off — each CPE is asked once, and CPEs close after answering anyway.
    """

    def __init__(self, timeout_s: float, max_in_flight: int) -> None:
        self.timeout_s = timeout_s
        self._client = httpx2.AsyncClient(
            timeout=timeout_s,
            trust_env=False,
            limits=httpx2.Limits(max_connections=max_in_flight, max_keepalive_connections=0),
        )

    async def request(
        self, url: str | None, username: str | None, password: str | None
    ) -> tuple[bool, str]:
        """Send one connection request; ``(True, "")`` when the CPE accepted it, else
        ``(False, why)``. A refusal is not an operation failure: the CPE may still inform."""
        if not url:
            return False, "the CPE has not reported a ConnectionRequestURL"
        auth = httpx2.DigestAuth(username or "", password or "") if (username or password) else None
        try:
            response = await self._client.get(url, auth=auth)
        except httpx2.ConnectError:
            return False, f"connection request to {url}: connection refused or unreachable"
        except httpx2.TimeoutException:
            return False, f"connection request to {url}: no answer within {self.timeout_s:g} s"
        except httpx2.HTTPError as exc:
            return False, f"connection request to {url}: {type(exc).__name__}"
        if response.status_code in (200, 204):
            return True, ""
        if response.status_code == 401:
            return False, "the CPE refused the connection-request credentials (401)"
        if response.status_code == 503:
            return False, "the CPE declined the connection request (503: busy or rate-limited)"
        return False, f"connection request to {url}: HTTP {response.status_code}"

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()
