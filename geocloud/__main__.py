"""``python -m geocloud`` runs the command line."""

from geocloud.cli.entry import main

if __name__ == "__main__":
    main()
