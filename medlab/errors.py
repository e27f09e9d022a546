"""The few exception types medlab raises for mistakes a user can fix.

Each message says what went wrong and how to fix it, so that a learner never
has to read a traceback from deep inside pydicom, nibabel or papermill.
"""
from __future__ import annotations


class MedlabError(Exception):
    """Base class of medlab's own errors."""


class ParameterError(MedlabError, ValueError):
    """A parameter (profile name, device, notebook parameter) has a bad value."""


class ImageReadError(MedlabError, ValueError):
    """A medical image file could not be read.

    Attributes:
        path: the file that was being read.
        reason: what was wrong with it, in words.
    """

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path!r}: {reason}")


class DataNotFoundError(MedlabError, FileNotFoundError):
    """A data set is not where medlab looked for it.

    Attributes:
        name: the data set's name (as in a notebook's ``DATA`` parameter).
        how_to_get_it: instructions for obtaining it and where to put it.
    """

    def __init__(self, name: str, how_to_get_it: str):
        self.name = name
        self.how_to_get_it = how_to_get_it
        super().__init__(f"data set {name!r} not found. {how_to_get_it}")


class NotebookError(MedlabError):
    """A notebook name or notebook parameter given to the runner is not valid."""
