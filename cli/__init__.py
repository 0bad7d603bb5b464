"""geocloud command line (installed as geocloud.cli)."""
