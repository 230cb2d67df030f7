"""``python -m vitzoo`` (what ``torchrun ... -m vitzoo train SPEC`` runs in each process)."""

from vitzoo.cli import main

if __name__ == "__main__":
    main()
