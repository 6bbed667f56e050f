"""Query/Retrieve over the instances the forwarder holds (PS3.4 Annex C)."""
