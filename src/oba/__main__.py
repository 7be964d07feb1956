"""`python -m oba`: the same as the `oba` command."""

from oba.cli import main

if __name__ == "__main__":
    main()
