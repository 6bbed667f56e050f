"""Modality Worklist (C-FIND) and Modality Performed Procedure Step services."""
