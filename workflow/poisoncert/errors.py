"""The one exception type the CLI turns into a one-line message."""


class PoisonCertError(ValueError):
    """A user-facing error: bad input, bad config, missing data.

    The message is one line that says what is wrong and how to fix it; the CLI prints it as
    ``poisoncert: error: <message>`` and exits with status 2, without a traceback.
    """
