"""Keep liblsl's own log lines off the terminal unless asked for (`rtclassify --debug`).

liblsl reads one configuration file: $LSLAPICFG, else ./lsl_api.cfg, ~/lsl_api/lsl_api.cfg or
/etc/lsl_api/lsl_api.cfg. Only when the user has none of them is $LSLAPICFG pointed at a file
that sets the log level to errors-and-worse-hidden; a user's own file (network settings, its own
log level) is never replaced. Must run before pylsl is first imported.
"""
import os
from pathlib import Path

QUIET_CFG = Path(__file__).with_name("lsl_quiet.cfg")
USER_CFGS = ("lsl_api.cfg", "~/lsl_api/lsl_api.cfg", "/etc/lsl_api/lsl_api.cfg")


def quiet_liblsl() -> bool:
    """Point liblsl at the quiet configuration when the user has none; returns whether it did."""
    if os.environ.get("LSLAPICFG") or any(Path(p).expanduser().exists() for p in USER_CFGS):
        return False
    os.environ["LSLAPICFG"] = str(QUIET_CFG)
    return True
