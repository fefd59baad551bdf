"""Account page groups (``/account/<group>/``), one module each; see :mod:`moxtw.webui.site`."""
