"""Other libraries' APIs over rxjobs jobs: code written for them runs with its import changed.

:mod:`rxjobs.compat.submitit` is submitit's API (docs/executor.md).
"""
