"""``python -m rxjobs`` is the ``rxjobs`` command."""

from .cli import main

if __name__ == "__main__":
    main()
