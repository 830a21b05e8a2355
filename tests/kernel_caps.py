"""What the kernel lets the test process do, probed without the sandbox's own code: the sandbox
tests expect what the machine allows (an unprivileged container degrades, and says so)."""
import os
import subprocess

ROOT = os.geteuid() == 0


def _kernel_allows_namespaces() -> bool:
    """Can this process make mount + pid + ipc + net namespaces?"""
    try:
        return subprocess.run(["unshare", "--mount", "--pid", "--ipc", "--net", "--fork", "true"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


NS = _kernel_allows_namespaces()
