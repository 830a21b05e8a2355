"""Policy plug-ins: importing this package registers every built-in policy."""
from policies import acceptance, analyst, controls, stopping, targeting  # noqa: F401,E402
from policies.base import POLICIES  # noqa: F401
