"""The DICOM listener's plumbing shared by every service: pynetdicom internals (compat)."""
