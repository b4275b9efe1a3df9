"""``python -m cnn_explain ...`` is the ``cnn-explain`` command (see :mod:`cnn_explain.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
