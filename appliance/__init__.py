"""DICOM Appliance: worklist, print, store-and-forward and a web page, in one small box."""

__version__ = "0.1.0"
