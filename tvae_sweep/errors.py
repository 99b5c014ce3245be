"""The ground floor: the error a user fixes, and what no message, file or log may show.

Every layer raises ConfigError for bad input (the CLI prints it as one line and exits 2), and
passes what it shows or stores through redact().
"""
from __future__ import annotations

import re


class ConfigError(ValueError):
    """A config value is wrong; the message names the field and what is allowed."""


# Messages hold URIs among other words, so a pattern finds them (a URL library renders one URL)
HIDDEN = "***"  # stands for a password wherever a URI is shown or stored
_NETLOC = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<netloc>[^/\s?#'\"]*)")
_SECRET_QUERY = re.compile(r"(?i)(?P<key>[?&;](?:password|passwd|pwd)=)(?P<value>[^&;#\s'\"]*)")


def redact(text: str) -> str:
    """`text` (a URI, or any message holding URIs) with every password replaced by ***: the one in
    user:password@host and a password=... query parameter. The user name and the host stay."""
    def netloc(match: re.Match) -> str:
        userinfo, at, host = match["netloc"].rpartition("@")
        if not at or ":" not in userinfo:
            return match[0]
        user = userinfo.split(":", 1)[0]
        return f"{match['scheme']}{user}:{HIDDEN}@{host}"

    text = _NETLOC.sub(netloc, str(text))
    return _SECRET_QUERY.sub(lambda m: m["key"] + HIDDEN if m["value"] else m[0], text)


def hidden_password(uri: str) -> bool:
    """True for a URI whose password redact() replaced, such as the tracking.uri of a saved spec."""
    match = _NETLOC.match(uri.strip())
    userinfo = match["netloc"].rpartition("@")[0] if match else ""
    if userinfo.partition(":")[2] == HIDDEN:
        return True
    return any(m["value"] == HIDDEN for m in _SECRET_QUERY.finditer(uri))
