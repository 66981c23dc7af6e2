"""Sending one message to a webhook, the only network call of the alerts. A webhook URL's path, query and
user:password are its secret, so nothing this module raises or logs holds more of the URL than scheme://host."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping


class NotifyError(RuntimeError):
    """A webhook could not be reached or refused the message. The text never holds the URL's path, query,
    user or password.

    ``status`` is the HTTP status when there was an answer, else None.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """No answer, throttled or a server error: the same request may succeed later."""
        return self.status is None or self.status == 429 or self.status >= 500


def url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as a webhook URL, in words that quote none of it; None when usable.

    Checked at start-up, so a typo stops the job at once instead of at its first anomaly.
    """
    if any(c.isspace() for c in url):
        return "contains a space or a line break"
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "cannot be read as a URL (a [ without its ])"
    if parts.scheme not in ("http", "https"):
        return "does not start with http:// or https://"
    if not parts.hostname:
        return "has no host"
    try:
        _ = parts.port
    except ValueError:
        return "has a port that is not a number from 0 to 65535"
    return None


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` of an http(s) URL, the only part of a webhook URL that may be logged;
    ``<invalid URL>`` for anything else."""
    if url_problem(url) is not None:
        return "<invalid URL>"
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}" + (f":{port}" if port is not None else "")


def _scrub(text: str, url: str) -> str:
    """Remove every secret part of ``url`` from a text that may be logged."""
    parts = urllib.parse.urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    user, _, password = userinfo.partition(":")
    secrets = [
        url,
        parts.path + ("?" + parts.query if parts.query else ""),
        parts.path,
        parts.query,
        userinfo,
        user,
        password,
        urllib.parse.unquote(user),
        urllib.parse.unquote(password),
        urllib.parse.unquote(parts.path),
    ]
    for secret in sorted(filter(None, set(secrets)), key=len, reverse=True):
        if secret != "/":
            text = text.replace(secret, "…")
    return " ".join(text.split())


def _credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its ``user:password@``, and those as an HTTP Basic header, as curl sends them
    (urllib would take them for part of the host name)."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, {}
    user, _, password = userinfo.partition(":")
    pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), {
        "Authorization": "Basic " + base64.b64encode(pair).decode("ascii")
    }


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would send the message (and maybe the secret path) somewhere not configured: refuse it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    if isinstance(error, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__


def post(url: str, body: Mapping, timeout: float) -> None:
    """POST ``body`` as UTF-8 JSON to a webhook; return on a 2xx answer, else raise ``NotifyError``.

    ``timeout`` (seconds) bounds the connection and each read. A ``user:password@`` in the URL is sent as
    HTTP Basic auth. Redirects are not followed; proxies come from the usual environment variables
    (https_proxy, no_proxy).
    """
    problem = url_problem(url)
    if problem:
        raise NotifyError(f"the webhook URL {problem}")
    where = redact_url(url)
    target, auth = _credentials(url)
    data = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    request = urllib.request.Request(
        target,
        data=data,
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "sensor-anomaly-notify",
            **auth,
        },
    )
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            answer = response.read(4096)
    except urllib.error.HTTPError as e:
        try:
            detail = _scrub(e.read(300).decode("utf-8", "replace"), url)
        except (OSError, http.client.HTTPException):
            detail = ""
        finally:
            e.close()
        raise NotifyError(
            f"webhook at {where} answered HTTP {e.code}" + (f": {detail[:200]}" if detail else ""), status=e.code
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise NotifyError(f"cannot reach the webhook at {where}: {_scrub(_reason(e), url)}") from None
    # Teams connectors answer throttling with a success status and this text in the body.
    if b"HTTP error 429" in answer:
        raise NotifyError(f"webhook at {where} is throttling (HTTP error 429 in its answer)", status=429)
