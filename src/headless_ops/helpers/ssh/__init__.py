"""The ``ssh`` helper: routers, switches, firewalls and Linux hosts over SSH."""

from headless_ops.helpers.ssh.helper import SshHelper

__all__ = ["SshHelper"]
