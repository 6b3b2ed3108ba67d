"""Secrets kept out of texts and logs, in every form code prints them in."""

import io
import json
import logging
from urllib.parse import quote

from core import redaction

SECRET = "sk-test-redaction-0123"


def test_every_printed_form_is_redacted():
    pasted = SECRET + "\n"
    texts = [
        f"Illegal header value b'Bearer {pasted!r}'",  # a repr, escaped newline and all
        json.dumps({"key": pasted}),
        f"https://api.example/v1?key={quote(SECRET)}",
        f"plain {SECRET}.",
    ]
    for text in texts:
        cleaned = redaction.redact(text, pasted)
        assert SECRET not in cleaned and redaction.REDACTED in cleaned, cleaned
    assert redaction.redact("nothing to hide", pasted) == "nothing to hide"
    assert redaction.redact("a short key: abc", "abc") == "a short key: abc"  # too short


def test_the_log_filter_redacts_remembered_secrets_in_messages_and_tracebacks():
    redaction.remember(SECRET)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(redaction.RedactingFilter())
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("calling with key %s", SECRET)
        try:
            raise ValueError(f"refused header {SECRET!r}")
        except ValueError:
            logger.exception("request failed")
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert SECRET not in written
    assert written.count(redaction.REDACTED) == 2 and "Traceback" in written
