"""The command line, `keras-fsnn`: `main(argv)` runs it in Python (a user error raises
`UsageError`, both a `SystemExit` with code 2 and a `ValueError`).

It is implemented in `_keras_fsnn.cli`, outside this package, so that `keras-fsnn --help` and
`keras-fsnn list` start without importing Keras (see that module).
"""

from _keras_fsnn.cli import UsageError, build_parser, main, train_command

__all__ = ["UsageError", "build_parser", "main", "train_command"]

if __name__ == "__main__":
    main()
