"""`python -m runscaler` runs the command line."""

from runscaler.cli import main

if __name__ == "__main__":
    main()
