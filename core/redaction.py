"""Keeping secrets out of texts and logs.

``redact(text, secret)`` replaces a secret in a text in every form it takes when code prints
it: as given, stripped of surrounding whitespace, escaped as in a ``repr`` or in JSON, and
percent-encoded. ``remember(secret)`` adds a secret to those this process keeps out of its
logs: the ``Secret`` field remembers every value it encrypts or decrypts, and
``RedactingFilter`` (installed by the command line on its log handler) redacts them all from
each record's message and traceback, whatever logger wrote it.
"""

from __future__ import annotations

import json
import logging
import threading
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
_MIN_LENGTH = 6  # shorter values would redact ordinary words
_remembered: set[str] = set()
_lock = threading.Lock()


def forms(secret: str) -> set[str]:
    """The texts ``secret`` may appear as."""
    found = set()
    for value in {secret, secret.strip()}:
        found.update({value, repr(value)[1:-1], json.dumps(value)[1:-1]})
        found.update({quote(value, safe=""), quote_plus(value)})
    return {form for form in found if len(form) >= _MIN_LENGTH}


def redact(text: str, *secrets: str | None) -> str:
    """``text`` without ``secrets`` (in any of their forms), longest forms first."""
    every = set()
    for secret in secrets:
        if secret:
            every |= forms(secret)
    for form in sorted(every, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text


def remember(secret: str) -> None:
    """Keep ``secret`` out of this process's logs from now on."""
    if len(secret.strip()) >= _MIN_LENGTH:
        with _lock:
            _remembered.add(secret)


def redact_remembered(text: str) -> str:
    with _lock:
        secrets = tuple(_remembered)
    return redact(text, *secrets) if secrets else text


class RedactingFilter(logging.Filter):
    """Redacts the remembered secrets from a record's message and traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_remembered(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_remembered(record.exc_text)
        return True
