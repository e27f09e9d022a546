"""Tests that need something from outside (a browser, a package registry): skip loudly here, fail in CI.

Without the thing, such a test is skipped with a loud reason that ``conftest.py`` repeats at the end of
the run; when the environment variable that asks for it is set (``.ci/run`` sets each one), the same
absence is a failure, so CI can never pass with the check silently left out.
"""
from __future__ import annotations

import os

import pytest


def required(variable: str) -> bool:
    """Whether ``variable`` is set to something other than empty, ``0``, ``false`` or ``no``."""
    return os.environ.get(variable, "").strip().lower() not in ("", "0", "false", "no")


def fail_or_skip(reason: str, variable: str, tests: str, heading: str, purpose: str, skipped: list) -> None:
    """Fail when ``variable`` asks for these ``tests``; otherwise skip them with ``heading``, ``reason`` and
    ``purpose``, and add the message to ``skipped`` for the loud line at the end of the run."""
    if required(variable):
        pytest.fail(f"{reason} ({variable} is set, so {tests} must run)", pytrace=False)
    message = (f"{heading}: {reason}. {purpose}; set {variable}=1 to make this a failure (.ci/run does)")
    skipped.append(message)
    pytest.skip(message)
