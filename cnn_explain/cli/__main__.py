"""``python -m cnn_explain.cli ...`` is the ``cnn-explain`` command."""

from . import main

if __name__ == "__main__":
    raise SystemExit(main())
