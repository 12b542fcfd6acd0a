"""Connection requests: the ACS asks a CPE to open a session (HTTP GET, Digest auth)."""

from __future__ import annotations

import httpx2

__all__ = ["connection_request"]


async def connection_request(
    url: str | None,
    username: str | None,
    password: str | None,
    *,
    timeout_s: float,
) -> tuple[bool, str]:
    """Send one connection request; ``(True, "")`` when the CPE accepted it, else
    ``(False, why)``. A refusal is not an operation failure: the CPE may still inform."""
    if not url:
        return False, "the CPE has not reported a ConnectionRequestURL"
    auth = httpx2.DigestAuth(username or "", password or "") if (username or password) else None
    try:
        async with httpx2.AsyncClient(timeout=timeout_s, trust_env=False) as client:
            response = await client.get(url, auth=auth)
    except httpx2.ConnectError:
        return False, f"connection request to {url}: connection refused or unreachable"
    except httpx2.TimeoutException:
        return False, f"connection request to {url}: no answer within {timeout_s:g} s"
    except httpx2.HTTPError as exc:
        return False, f"connection request to {url}: {type(exc).__name__}"
    if response.status_code in (200, 204):
        return True, ""
    if response.status_code == 401:
        return False, "the CPE refused the connection-request credentials (401)"
    if response.status_code == 503:
        return False, "the CPE declined the connection request (503: busy or rate-limited)"
    return False, f"connection request to {url}: HTTP {response.status_code}"
