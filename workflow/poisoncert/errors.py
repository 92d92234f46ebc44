"""The one exception type the CLI turns into a one-line message."""


class PoisonCertError(ValueError):
    """A user-facing error: bad input, bad config, missing data.

    The message is one line that says what is wrong and how to fix it; the CLI prints it as
    ``poisoncert: error: <message>`` and exits with status 2, without a traceback. A message that
    quotes a user's value stays one line whatever the value holds: control characters (a newline
    in a key, a path or a table name) are shown escaped.

    >>> str(PoisonCertError("no table 'a\\nb'"))
    "no table 'a\\\\nb'"
    """

    def __str__(self) -> str:
        text = super().__str__()
        if text.isprintable():
            return text
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
