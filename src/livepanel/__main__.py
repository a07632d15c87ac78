"""``python -m livepanel``: the same as the ``livepanel`` command."""

from livepanel.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
