"""Storage options of a share dir, and the redaction of credentials in what is stored.

fsspec storage options (``endpoint_url``, ``key``, ``secret``, proxies,
headers...) reach a job's processes through their environment, never through
a file: whatever rxjobs writes to ``job.json`` goes through :func:`redact`
first.  Redaction goes by **name** (an option or header called ``secret``,
``password``, ``authorization``...) and by **value** (userinfo in a URL
anywhere in a string, ``Bearer``/``Basic`` credentials, every value of a
``headers`` mapping but a few harmless ones), so that a credential survives
neither under an innocent name nor inside an innocent-looking URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

REDACTED = "<redacted>"

# Option (or header) names whose values are credentials, matched as lowercase substrings.
_SECRET_WORDS = ("secret", "password", "passwd", "pwd", "passphrase", "passcode", "token", "key",
                 "credential", "sas", "connection_string", "conn_str", "auth", "signature", "cookie",
                 "login", "session", "private", "bearer", "cert_pass", "otp", "apikey")
# Short words that name a credential only as a whole word of the name (``pw``, ``user_pw``,
# ``apiPass``), not inside another word; ``sig`` is Azure's SAS signature in a query.
_SECRET_TOKENS = frozenset({"pw", "pass", "pin", "sig", "cred", "creds"})
# Words that name a credential only as the name's last word (``api``, ``openai_api``; not
# ``api_version``).
_SECRET_LAST_TOKENS = frozenset({"api"})
# Header names whose values are not secret; every other header value is redacted.
_HARMLESS_HEADERS = frozenset({"accept", "accept-encoding", "accept-language", "content-type",
                               "content-encoding", "user-agent", "cache-control", "connection",
                               "range", "host"})
# ``scheme://userinfo@`` or a scheme-less ``//userinfo@`` anywhere in a string (a proxy URL, an
# endpoint with a login...).  The userinfo runs to the *last* ``@`` before a space, so a
# password holding an unencoded ``/`` or ``@`` is redacted whole; a part with neither ``:``
# nor a ``/`` before the ``@`` is a path (``https://host/a@b``), not userinfo.
_URL_USERINFO_RE = re.compile(
    r"""((?:[A-Za-z][A-Za-z0-9+.-]*:)?//)([^\s'"<>]*)@(?=[^\s'"<>@]*(?:[\s'"<>]|$))""")
# A credential as an HTTP header value carries it: ``Bearer abc``, ``Basic dXNlcjpwdw==``.
_SCHEME_CREDENTIAL_RE = re.compile(r"\s*(bearer|basic|digest|token|negotiate|aws4-hmac-sha256)\s+\S",
                                   re.IGNORECASE)
# The same inside a longer string (``curl -H 'Authorization: Bearer abc'``).
_INNER_CREDENTIAL_RE = re.compile(r"\b(bearer|basic|digest|negotiate|aws4-hmac-sha256)(\s+)[^\s'\",;]+",
                                  re.IGNORECASE)
# A credential-carrying header written out in a string: ``Authorization: xyz``, ``Cookie=...``.
_INNER_HEADER_RE = re.compile(r"\b((?:proxy-)?authorization|cookie|x-api-key|x-auth-token|"
                              r"x-amz-security-token)(\s*[:=]\s*)(?!(?:bearer|basic|digest|negotiate|"
                              r"aws4-hmac-sha256)\s)[^\s'\",;&]+", re.IGNORECASE)
# A query parameter whose name holds a credential: ``?X-Amz-Signature=...``, ``&sig=...``.
_QUERY_PARAM_RE = re.compile(r"([?&;])([^=&#\s?;]+)=([^&#\s'\"]*)")
_WORD_RE = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def is_secret_name(name: str) -> bool:
    """Whether an option, header or query parameter called ``name`` holds a credential (by
    its name)."""
    lowered = name.lower()
    if any(word in lowered for word in _SECRET_WORDS):
        return True
    words = [word.lower() for word in _WORD_RE.findall(name)]
    return any(word in _SECRET_TOKENS for word in words) or bool(words) and words[-1] in _SECRET_LAST_TOKENS


def _userinfo(match: re.Match[str]) -> str:
    start, userinfo = match.group(1), match.group(2)
    if ":" not in userinfo and "/" in userinfo:
        return match.group(0)  # ``//host/path@x``: a path, no userinfo
    if ":" in userinfo and "/" in userinfo.split(":", 1)[0]:
        return match.group(0)  # ``//host/a:b@c``: the colon is in the path
    return f"{start}{REDACTED}@"


def _query_param(match: re.Match[str]) -> str:
    lead, name, value = match.groups()
    return f"{lead}{name}={REDACTED}" if value and is_secret_name(name) else match.group(0)


def redact_text(text: str) -> str:
    """``text`` with URL userinfo, credential query parameters, scheme credentials and
    credential headers replaced by ``<redacted>``."""
    if _SCHEME_CREDENTIAL_RE.match(text):
        return REDACTED
    text = _URL_USERINFO_RE.sub(_userinfo, text)
    text = _QUERY_PARAM_RE.sub(_query_param, text)
    text = _INNER_CREDENTIAL_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _INNER_HEADER_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def redact(value: Any, name: str = "") -> Any:
    """A JSON-able copy of ``value`` with every credential replaced by ``"<redacted>"``.

    Parameters
    ----------
    value
        Options as plain values: mappings, lists/tuples, strings, numbers.
    name
        The name ``value`` is stored under (its option name), judged too.
    """
    if name and is_secret_name(name) and value is not None and not isinstance(value, bool):
        return REDACTED
    if isinstance(value, Mapping):
        headers = "header" in name.lower()
        return {str(k): (REDACTED if headers and str(k).lower() not in _HARMLESS_HEADERS
                         and v is not None else redact(v, str(k)))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return StorageOptions(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, StorageOptions):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


class StorageOptions(Mapping[str, Any]):
    """fsspec storage options as an immutable, hashable, comparable mapping.

    Compute contexts hold their ``share_dir_options`` as one of these, so that
    they stay frozen values.  Nested dicts (``client_kwargs={...}``) are
    frozen too.  The ``repr`` never shows a credential; :meth:`redacted` is
    what goes into ``job.json``.
    """

    __slots__ = ("_items",)

    def __init__(self, options: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        items = options.items() if isinstance(options, Mapping) else options
        frozen = {}
        for key, value in items:
            if not isinstance(key, str) or not key:
                raise TypeError(f"storage option names must be non-empty strings, not {key!r}")
            frozen[key] = _freeze(value)
        self._items: tuple[tuple[str, Any], ...] = tuple(sorted(frozen.items()))
        hash(self._items)  # every value must be hashable once frozen (no sets of dicts...)

    def __getitem__(self, key: str) -> Any:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StorageOptions):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        return NotImplemented

    def __reduce__(self) -> tuple[Any, ...]:
        return (StorageOptions, (self.to_dict(),))

    def __repr__(self) -> str:
        return f"StorageOptions({self.redacted()!r})"

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts and lists, as fsspec takes them (credentials included)."""
        return {k: _thaw(v) for k, v in self._items}

    def redacted(self) -> dict[str, Any]:
        """Plain dicts and lists with every credential replaced by ``"<redacted>"``."""
        return {k: redact(_thaw(v), k) for k, v in self._items}


def storage_options(options: Mapping[str, Any] | Iterable[tuple[str, Any]] | None,
                    ) -> StorageOptions | None:
    """Normalise ``share_dir_options`` as given by a user (dict, pairs or None).

    Values that were redacted in a ``job.json`` are dropped: the context
    rebuilt from a record never carries ``"<redacted>"`` as a credential.
    Returns None when no option is left.
    """
    if options is None:
        return None
    if not isinstance(options, (Mapping, list, tuple)):
        raise TypeError(f"share_dir_options must be a dict of fsspec storage options, not "
                        f"{type(options).__name__}")
    kept = _drop_redacted(StorageOptions(options))
    return StorageOptions(kept) if kept else None


def has_redacted_value(options: Mapping[str, Any]) -> str | None:
    """The name of the first option whose value holds ``"<redacted>"``, else None."""
    for key, value in options.items():
        if isinstance(value, Mapping):
            if has_redacted_value(value) is not None:
                return key
        elif REDACTED in str(value):
            return key
    return None


def _drop_redacted(options: StorageOptions) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, StorageOptions):
            value = _drop_redacted(value)
        if not (isinstance(value, str) and REDACTED in value):
            kept[key] = value
    return kept
