"""The web admin, served by the node itself on ``web.address``."""
