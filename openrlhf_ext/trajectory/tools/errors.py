"""The errors of the offline tools. Each message names the file (and row, line or key) that is
wrong, or says what to do, so that the command line prints it as one line instead of a traceback."""


class ConvertError(Exception):
    """Input that cannot be converted; the message names the file (and row, line or key)."""


class ReportError(Exception):
    """A report cannot be made (no viewer, no matching files); the message says why and what to do."""
