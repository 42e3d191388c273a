"""Sandboxed execution of model code: backends (docker, bwrap), the runner protocol, the trusted harness."""
