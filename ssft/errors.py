"""The one kind of error a user can fix: bad params, bad data, a missing file or service. The message names
the file or field and the fix; the CLI prints it as one line and exits 2. Every other exception is a bug and
keeps its traceback (exit 1)."""


class UserError(ValueError):
    """Bad input or environment, explained in the message (a ValueError, so callers may catch either)."""
