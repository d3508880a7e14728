"""The version of rxjobs (``rxjobs.__version__``), a leaf that any layer may import.

``job.json`` records it, so that an older rxjobs meeting a job of a newer
format can say which rxjobs the job needs.
"""

__version__ = "0.2.0"
