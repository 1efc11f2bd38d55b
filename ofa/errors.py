"""The one exception type the CLI turns into a clean one-line message."""


class OFAError(Exception):
    """A problem with the user's input or files, explained in one line."""
