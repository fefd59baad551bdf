"""The web interface: admin pages at ``/admin/`` and account pages at ``/account/`` on the
HTTP listener, rendered on the server with ``twisted.web.template`` (see
docs/web-interface.md).

Layout:

- :mod:`.session`: signed session cookies, CSRF tokens, the key file;
- :mod:`.http`: transport (TLS, local, proxy) and same-origin checks, forms, cookies;
- :mod:`.layout`: the page layout and building blocks (tags; everything escaped);
- :mod:`.core`: areas, the :class:`~.core.WebUI` context, :func:`~.core.guarded` (every
  page's checks: transport, origin, session, CSRF);
- :mod:`.login`: login, logout and index of each area;
- :mod:`.admin` and :mod:`.account`: one module per page group (a class with its own
  Klein app), listed in :mod:`.site`, which mounts everything.

Adding a page group: write ``admin/<group>.py`` with a class like
:class:`~.admin.queue.QueuePages` (``ui``, ``area``, ``app = Klein()``,
``install_error_pages(app)``, handlers decorated with ``@guarded()``) and add it to
:data:`~.site.ADMIN_GROUPS` (or :data:`~.site.ACCOUNT_GROUPS`).  Writes go through the
same operations as the CLI and the APIs (:class:`~moxtw.admin.ops.QueueAdmin`, the
webapi's :class:`~moxtw.webapi.methods.Methods`), never through SQL of their own.
"""
