"""Queue administration: operations on the store (:mod:`moxtw.admin.ops`), the admin HTTP
API (:mod:`moxtw.admin.api`, sherpa-shaped like mox's) and its command-line client
(:mod:`moxtw.admin.client`, standard library only, for ``moxtw queue ...``).

Importing this package imports nothing else, so the command-line tool stays light.
"""
