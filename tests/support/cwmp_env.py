"""An ACS on a real socket beside the API, with the cwmp helper and a scheduler, and
simulated CPEs informing it — for end-to-end TR-069 tests on both engines."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from headless_ops.cwmp.acs import AcsServer, make_engine
from headless_ops.cwmp.engine import AcsEngine
from headless_ops.cwmp.helper import CwmpHelper
from headless_ops.simulator import CpeConfig, SimulatedCpe
from tests.conftest import Api
from tests.support.sched import running

__all__ = ["AcsEnv", "acs_env"]


@dataclass
class AcsEnv:
    """The pieces a TR-069 test drives."""

    api: Api
    engine: AcsEngine
    server: AcsServer
    helper: CwmpHelper
    headers: dict[str, str]
    cpes: list[SimulatedCpe] = field(default_factory=list)

    @property
    def acs_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/"

    async def cpe(self, serial: str, **config: Any) -> SimulatedCpe:
        """A simulated CPE, started (it bootstraps: the ACS registers it)."""
        config.setdefault("reboot_s", 0.2)
        cpe = SimulatedCpe(CpeConfig(acs_url=self.acs_url, serial_number=serial, **config))
        self.cpes.append(cpe)
        await cpe.start()
        return cpe

    async def device_id(self, cpe: SimulatedCpe) -> str:
        """The inventory id the ACS gave (or matched to) the CPE."""
        row = await self.engine.store.device(_key(cpe))
        assert row is not None, "the CPE has not informed"
        return str(row.device_id)


def _key(cpe: SimulatedCpe) -> str:
    from headless_ops.cwmp.soap import device_key

    return device_key(cpe.device_id)


@contextlib.asynccontextmanager
async def acs_env(api: Api, *, scheduler: bool = True, **settings: Any) -> AsyncIterator[AcsEnv]:
    """ACS (port 0) + cwmp helper + (optionally) a running scheduler on ``api``'s runtime."""
    s = api.runtime.settings
    s.cwmp_host = "127.0.0.1"
    s.cwmp_port = 0
    s.cwmp_tenant = "acme"
    s.cwmp_session_wait_s = 10
    s.cwmp_connection_request_timeout_s = 2
    s.cwmp_session_timeout_s = 10
    s.retry_base_s = 0.05
    s.retry_cap_s = 0.2
    s.backup_file_roots = [s.data_dir / "backups"]
    for name, value in settings.items():
        setattr(s, name, value)
    helper = CwmpHelper()
    api.runtime.add_helper(helper)
    engine = make_engine(api.runtime)
    server = AcsServer(engine, s)
    await server.start()
    headers = await api.auth("acme")
    env = AcsEnv(api, engine, server, helper, headers)
    try:
        if scheduler:
            async with running(api.runtime.make_scheduler()):
                yield env
        else:
            yield env
    finally:
        for cpe in env.cpes:
            await cpe.close()
        await server.stop()
