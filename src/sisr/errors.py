"""The one exception type that the command line turns into a one-line message."""


class SisrError(ValueError):
    """Bad input from the user: a file, a checkpoint, a name or an option.

    The message names the offending thing and the problem in one line. The CLI prints it as
    ``sisr: error: <message>`` and exits with status 1, without a traceback.
    """
