"""Store and forward: Storage SCP into a durable spool, C-STORE SCU toward each PACS.

Modules: ``spool`` (durable files), ``queue`` (SQL state, and the functions a queue
page uses), ``routing`` and ``retry`` (pure policies), ``receiver`` (Storage SCP
handler), ``sender`` (one worker per destination), ``service`` (wiring).
"""
