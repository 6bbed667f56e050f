"""Print Management SCP: film sessions to pages on a printer or a PDF folder (PS3.4 H).

``session`` (pure rules) · ``repo`` (SQLite + files) · ``scp`` (pynetdicom handlers) ·
``service`` (the service on the shared listener) · ``jobs`` (render and deliver) ·
``output`` (folder, IPP, CUPS) · ``ipp`` (IPP client) · ``events`` (N-EVENT-REPORT) ·
``history`` (what the web pages need).
"""
