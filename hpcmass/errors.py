"""Typed errors. The CLI turns any of these into one line on stderr and an exit code, no traceback."""


class HpcmassError(Exception):
    """A problem the user can fix; the message says what and where."""

    exit_code = 1


class ParamsError(HpcmassError):
    """A params file or --set override is missing, malformed or out of range."""

    exit_code = 2


class StoreError(HpcmassError):
    """The store is locked, truncated, or was made with different params."""

    exit_code = 2


class StoreBusyError(StoreError):
    """Another live process holds the store (writer lock or HDF5 file lock); retrying later can succeed."""


class StageError(HpcmassError):
    """A stage cannot run: an earlier stage is missing, or some units failed."""

    exit_code = 1


class InputError(HpcmassError):
    """A user-supplied input file (an event list, an exported model directory) is missing or unusable."""

    exit_code = 2
