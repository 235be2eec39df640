"""``python -m robustlab`` runs the command line."""

from robustlab.cli import main

if __name__ == "__main__":
    main()
