"""Errors a user can act on: each says what was wrong, where, and how to fix it."""


class ComplexityNetError(Exception):
    """Base class: the CLI prints these without a traceback and exits with status 2."""


class ConfigError(ComplexityNetError):
    """params.yaml is invalid (unknown key, wrong type, dangling reference)."""


class DataError(ComplexityNetError):
    """An input file is malformed or missing; the message names the file and record."""


class ChecksumError(DataError):
    """A source file's sha256 does not match the declared one."""
