"""User-facing errors.

A :class:`CtrlshiftError` carries one line that names the key, file or value at fault and what is
expected. The CLI prints that line and exits with status 2; library callers can catch it.
"""

from __future__ import annotations


class CtrlshiftError(Exception):
    """Bad input: the message names what is wrong and what to do instead."""

    exit_code = 2


class ConfigError(CtrlshiftError, ValueError):
    """A config key, type or value is not allowed."""


class RegistryError(CtrlshiftError, KeyError):
    """An unknown or duplicate registry name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
