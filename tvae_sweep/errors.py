"""The ground floor: the error a user fixes, its one line, and what no message, file or log may show.

Every layer raises ConfigError for bad input (the CLI prints it as one line and exits 2), makes a
pydantic validation's errors one line with one_line(), and passes what it shows or stores through
redact().
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Union, get_args, get_origin

if TYPE_CHECKING:
    from pydantic import ValidationError


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


# ---------------------------------------------------------------- a pydantic validation as one line

# what a wrong type is told; literal_error (a value not among a Literal's) is spelled from its context
_TYPE_ERRORS = {"int_type": "must be an integer", "float_type": "must be a number",
                "bool_type": "must be true or false", "string_type": "must be a string", "list_type": "must be a list",
                "tuple_type": "must be a list", "dict_type": "must be a mapping of keys to values",
                "model_type": "must be a mapping of keys to values"}


def one_line(err: ValidationError, model: type, given: Sequence[str] = (), section: str = "") -> str:
    """The first problem of a pydantic validation of `model` as one line naming its field: wrong types
    and unknown keys first, in the order the keys were `given`, then the checks. `section` prefixes the
    names of a model validated on its own (model.n_caps for ModelConfig's n_caps)."""
    def order(e: dict) -> tuple[bool, int, int]:
        checked = e["type"] not in _TYPE_ERRORS and e["type"] not in ("extra_forbidden", "literal_error")
        top = e["loc"][0] if e["loc"] else None
        # of one key's problems the deepest: a list's wrong item rather than the list as another member of a union
        return checked, 0 if checked or top not in given else list(given).index(top), -len(e["loc"])

    errors = err.errors()
    e = min(errors, key=order)
    if isinstance(e.get("ctx", {}).get("error"), ConfigError):  # a check that names its own fields
        return str(e["ctx"]["error"])
    parts, holder = _path(model, e["loc"])
    name = (section + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)).removeprefix(".")
    if e["type"] == "extra_forbidden":
        allowed = f"; allowed: {', '.join(holder.model_fields)}" if holder is not None else ""
        return f"{name}: unknown key{allowed}"
    if e["type"] == "literal_error":
        expected = e["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
        return f"{name}: must be one of {expected}, got {e['input']!r}"
    if e["type"] in _TYPE_ERRORS:  # a union names each of its kinds: 'must be a string or a list'
        kinds = dict.fromkeys(_TYPE_ERRORS[x["type"]].removeprefix("must be ") for x in errors
                              if x["type"] in _TYPE_ERRORS and _path(model, x["loc"])[0] == parts)
        return f"{name}: must be {' or '.join(kinds)}, got {e['input']!r}"
    return f"{name}: {e['msg'].removeprefix('Value error, ')}"


def _path(model: type, loc: tuple) -> tuple[list, type | None]:
    """The parts of an error's location that the user wrote (pydantic adds a label for the member of a
    union that was tried, which is left out), and the model whose field the last part is, if any."""
    parts, kind, holder = [], model, None
    for part in loc:
        kind = _bare(kind)
        if get_origin(kind) in (Union, UnionType):  # this part is the label of one of its members
            kind = None
            continue
        parts.append(part)
        holder = kind if hasattr(kind, "model_fields") else None
        kind = _inner(kind, part)
    return parts, holder


def _bare(kind):
    """A type without its Annotated metadata, and X for X | None."""
    if get_origin(kind) is Annotated:
        kind = get_args(kind)[0]
    if get_origin(kind) in (Union, UnionType):
        members = [k for k in get_args(kind) if k is not type(None)]
        if len(members) == 1:
            return _bare(members[0])
    return kind


def _inner(kind, part):
    """The type found at `part` inside `kind`: a model's field, a dict's value, a list's or tuple's item."""
    if hasattr(kind, "model_fields"):
        field = kind.model_fields.get(part)
        return field.annotation if field is not None else None
    origin, args = get_origin(kind), get_args(kind)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin in (list, tuple) and args:
        return args[0]
    return None
