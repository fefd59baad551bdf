"""Admin page groups (``/admin/<group>/``), one module each; see :mod:`moxtw.webui.site`."""
