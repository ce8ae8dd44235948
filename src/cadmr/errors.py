"""The one exception type for mistakes a user can fix.

Every error the toolkit raises on purpose for bad input (a malformed file, an unknown
setting, a checkpoint from other data, a run folder in use, a diverged loss) is a
:class:`CadmrError`. The command line shows such an error as one line, ``cadmr: error:
...`` with exit status 2; anything else is a bug and keeps its traceback. Subclasses
also derive from the built-in type a caller would expect (``ValueError`` for bad values,
``RuntimeError`` for a state that cannot go on), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class CadmrError(Exception):
    """An expected error, caused by the input or the environment, that the user can fix."""


class CadmrValueError(CadmrError, ValueError):
    """A value, file or argument the toolkit cannot use (a ValueError too)."""


class CadmrFileNotFoundError(CadmrError, FileNotFoundError):
    """A file or folder the user named does not exist (a FileNotFoundError too)."""


class TrainingError(CadmrError, RuntimeError):
    """Training cannot continue (diverged loss, incompatible resume, a model without the
    features it needs, a run folder in use, ...)."""


class CadmrKeyError(CadmrError, KeyError):
    """An id or name the user gave is not known (a KeyError too). Its text is the message
    itself, not KeyError's quoted repr."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
